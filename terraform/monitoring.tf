# Alarms to a KMS-encrypted SNS topic: DR replication lag and failures, ALB 5xx, lifecycle
# queue depth (VNA/LifecycleQueueDepth, published by the lifecycle worker), catalogue storage.

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.logs.arn
}

data "aws_iam_policy_document" "alarms_topic" {
  statement {
    sid       = "CloudWatchAlarms"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_sns_topic_policy" "alarms" {
  arn    = aws_sns_topic.alarms.arn
  policy = data.aws_iam_policy_document.alarms_topic.json
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  alarm_actions = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "replication_latency" {
  alarm_name          = "${var.name}-s3-replication-latency"
  alarm_description   = "Objects take longer than ${var.replication_latency_alarm_seconds}s to reach the DR bucket."
  namespace           = "AWS/S3"
  metric_name         = "ReplicationLatency"
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 3
  threshold           = var.replication_latency_alarm_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  dimensions = {
    SourceBucket      = aws_s3_bucket.primary.bucket
    DestinationBucket = aws_s3_bucket.dr.bucket
    RuleId            = "to-dr"
  }
}

resource "aws_cloudwatch_metric_alarm" "replication_failures" {
  alarm_name          = "${var.name}-s3-replication-failures"
  alarm_description   = "Objects failed to replicate to the DR bucket."
  namespace           = "AWS/S3"
  metric_name         = "OperationsFailedReplication"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions

  dimensions = {
    SourceBucket      = aws_s3_bucket.primary.bucket
    DestinationBucket = aws_s3_bucket.dr.bucket
    RuleId            = "to-dr"
  }
}

resource "aws_cloudwatch_metric_alarm" "alb_5xx" {
  alarm_name          = "${var.name}-dicomweb-5xx"
  alarm_description   = "DICOMweb load balancer or gateway returned 5xx responses."
  comparison_operator = "GreaterThanThreshold"
  evaluation_periods  = 1
  threshold           = var.alb_5xx_alarm_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "total"
    expression  = "elb + target"
    label       = "5xx responses"
    return_data = true
  }

  metric_query {
    id = "elb"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      period      = 300
      stat        = "Sum"
      dimensions  = { LoadBalancer = aws_lb.dicomweb.arn_suffix }
    }
  }

  metric_query {
    id = "target"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      period      = 300
      stat        = "Sum"
      dimensions  = { LoadBalancer = aws_lb.dicomweb.arn_suffix }
    }
  }
}

# Published by the archive's lifecycle worker without dimensions.
resource "aws_cloudwatch_metric_alarm" "lifecycle_queue_depth" {
  alarm_name          = "${var.name}-lifecycle-queue-depth"
  alarm_description   = "The lifecycle worker is falling behind (VNA/LifecycleQueueDepth)."
  namespace           = "VNA"
  metric_name         = "LifecycleQueueDepth"
  statistic           = "Minimum"
  period              = 300
  evaluation_periods  = 6
  threshold           = var.lifecycle_queue_depth_alarm_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "dimse_unhealthy" {
  alarm_name          = "${var.name}-dimse-unhealthy-targets"
  alarm_description   = "Gateway tasks fail the DIMSE health check."
  namespace           = "AWS/NetworkELB"
  metric_name         = "UnHealthyHostCount"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions

  dimensions = {
    LoadBalancer = aws_lb.dimse.arn_suffix
    TargetGroup  = aws_lb_target_group.dimse.arn_suffix
  }
}

resource "aws_cloudwatch_metric_alarm" "db_free_storage" {
  alarm_name          = "${var.name}-catalogue-free-storage"
  alarm_description   = "Catalogue database has less than 10 GiB free."
  namespace           = "AWS/RDS"
  metric_name         = "FreeStorageSpace"
  statistic           = "Minimum"
  period              = 300
  evaluation_periods  = 2
  threshold           = 10 * 1024 * 1024 * 1024
  comparison_operator = "LessThanThreshold"
  alarm_actions       = local.alarm_actions

  dimensions = {
    DBInstanceIdentifier = aws_db_instance.catalogue.identifier
  }
}
