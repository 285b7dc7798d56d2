# DR replica bucket in the second region, with its own KMS key (kms.tf: aws_kms_key.dr) and
# its own access-log bucket (server access logs must stay in the bucket's region).

resource "aws_s3_bucket" "dr" {
  provider = aws.dr

  bucket              = local.dr_bucket_name
  object_lock_enabled = var.object_lock.enabled
}

resource "aws_s3_bucket_ownership_controls" "dr" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "dr" {
  provider = aws.dr

  bucket                  = aws_s3_bucket.dr.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "dr" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "dr" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.dr.arn
    }
    bucket_key_enabled = true
  }
}

data "aws_iam_policy_document" "dr_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.dr.arn, "${aws_s3_bucket.dr.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyOutdatedTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.dr.arn, "${aws_s3_bucket.dr.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "dr" {
  provider = aws.dr

  bucket     = aws_s3_bucket.dr.id
  policy     = data.aws_iam_policy_document.dr_bucket.json
  depends_on = [aws_s3_bucket_public_access_block.dr]
}

resource "aws_s3_bucket_logging" "dr" {
  provider = aws.dr

  bucket        = aws_s3_bucket.dr.id
  target_bucket = aws_s3_bucket.dr_logs.id
  target_prefix = "s3/${local.dr_bucket_name}/"
}

resource "aws_s3_bucket_object_lock_configuration" "dr" {
  provider = aws.dr

  count  = var.object_lock.enabled ? 1 : 0
  bucket = aws_s3_bucket.dr.id
  rule {
    default_retention {
      mode = var.object_lock.mode
      days = var.object_lock.retention_days
    }
  }
}

resource "aws_s3_bucket_notification" "dr" {
  provider = aws.dr

  bucket      = aws_s3_bucket.dr.id
  eventbridge = true
}

# Replicas arrive in var.dr_storage_class; older ones follow the cold/offline tiers.
resource "aws_s3_bucket_lifecycle_configuration" "dr" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr.id

  rule {
    id     = "archive-tiers"
    status = "Enabled"
    filter {}

    dynamic "transition" {
      for_each = var.storage_tiers.enabled ? concat(
        var.dr_storage_class == "GLACIER_IR" ? [] : [
          { days = var.storage_tiers.cold_after_days, storage_class = "GLACIER_IR" },
        ],
        [
          { days = var.storage_tiers.offline_after_days, storage_class = var.storage_tiers.offline_storage_class },
        ],
      ) : []
      content {
        days          = transition.value.days
        storage_class = transition.value.storage_class
      }
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  # Readiness probe objects (health/, see s3.tf) arrive here by replication; they go as they
  # go on the primary.
  rule {
    id     = "expire-readiness-probes"
    status = "Enabled"
    filter {
      prefix = "health/"
    }

    expiration {
      days = 1
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.dr]
}

# --- access-log bucket (DR region) ---------------------------------------------------------

resource "aws_s3_bucket" "dr_logs" {
  #checkov:skip=CKV_AWS_145:S3 server access logs only support SSE-S3 target buckets
  #checkov:skip=CKV_AWS_144:Access logs are operational data with a bounded retention, not replicated
  provider = aws.dr

  bucket = local.dr_log_bucket_name
}

resource "aws_s3_bucket_ownership_controls" "dr_logs" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr_logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "dr_logs" {
  provider = aws.dr

  bucket                  = aws_s3_bucket.dr_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "dr_logs" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "dr_logs" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_notification" "dr_logs" {
  provider = aws.dr

  bucket      = aws_s3_bucket.dr_logs.id
  eventbridge = true
}

resource "aws_s3_bucket_lifecycle_configuration" "dr_logs" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr_logs.id

  rule {
    id     = "expire-logs"
    status = "Enabled"
    filter {}

    expiration {
      days = var.access_log_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 30
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.dr_logs]
}

data "aws_iam_policy_document" "dr_logs_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.dr_logs.arn, "${aws_s3_bucket.dr_logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "S3ServerAccessLogs"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.dr_logs.arn}/s3/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_s3_bucket_policy" "dr_logs" {
  provider = aws.dr

  bucket     = aws_s3_bucket.dr_logs.id
  policy     = data.aws_iam_policy_document.dr_logs_bucket.json
  depends_on = [aws_s3_bucket_public_access_block.dr_logs]
}
