data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

# Two zones, named explicitly so the subnet layout never changes when AWS adds a zone.
data "aws_availability_zones" "selected" {
  state = "available"

  filter {
    name   = "zone-name"
    values = local.az_names
  }
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  az_names   = var.availability_zones != null ? var.availability_zones : ["${var.region}a", "${var.region}b"]
  azs        = slice(sort(data.aws_availability_zones.selected.names), 0, 2)

  tags = merge(
    {
      Application = "vna"
      Deployment  = var.name
      ManagedBy   = "terraform"
    },
    var.tags,
  )

  primary_bucket_name = "${var.name}-archive-${local.account_id}-${var.region}"
  dr_bucket_name      = "${var.name}-archive-dr-${local.account_id}-${var.dr_region}"
  log_bucket_name     = "${var.name}-logs-${local.account_id}-${var.region}"
  dr_log_bucket_name  = "${var.name}-logs-dr-${local.account_id}-${var.dr_region}"

  # The archive's storage URL form: s3://BUCKET?region=REGION
  storage_url    = "s3://${aws_s3_bucket.primary.bucket}?region=${var.region}"
  dr_storage_url = "s3://${aws_s3_bucket.dr.bucket}?region=${var.dr_region}"

  data_dir = "/data"

  # Environment of the containers: only keys vna/config.py reads (vna.config.environment_keys()).
  # The database URL and the sources document come from `secrets`, never from `environment`.
  common_environment = [
    { name = "VNA_STORAGE_URL", value = local.storage_url },
    { name = "VNA_DATA_DIR", value = local.data_dir },
    { name = "VNA_LOG_LEVEL", value = var.log_level },
    { name = "VNA_HTTP_HOST", value = "0.0.0.0" },
    { name = "VNA_HTTP_PORT", value = "8080" },
  ]

  gateway_environment = concat(local.common_environment, [
    { name = "VNA_DIMSE_ENABLED", value = "true" },
    { name = "VNA_DIMSE_HOST", value = "0.0.0.0" },
    { name = "VNA_DIMSE_PORT", value = "11112" },
    { name = "VNA_DIMSE_AE_TITLE", value = var.ae_title },
    { name = "VNA_DIMSE_MAX_ASSOCIATIONS", value = tostring(var.dimse_max_associations) },
    # One server process per vCPU of the task, said explicitly rather than left to the CPUs
    # the container happens to see: each process holds a catalogue pool of
    # ingest.concurrency + 8 connections, and the tasks' total must fit RDS's max_connections
    # (docs/scaling.md; tests/unit/test_terraform.py checks it at the autoscaling ceiling).
    { name = "VNA_HTTP_WORKERS", value = tostring(max(1, min(8, floor(var.gateway_cpu / 1024)))) },
    # Lifecycle work (deletions, storage-class changes) runs in the lifecycle service: the
    # gateway role is not allowed to do it.
    { name = "VNA_LIFECYCLE_IN_SERVE", value = "false" },
  ])

  lifecycle_environment = concat(local.common_environment, [
    { name = "VNA_DIMSE_ENABLED", value = "false" },
  ])

  # One-off DR drill: the same image pointed at the DR bucket (read-only role).
  dr_drill_environment = [
    { name = "VNA_STORAGE_URL", value = local.dr_storage_url },
    { name = "VNA_DATA_DIR", value = local.data_dir },
    { name = "VNA_LOG_LEVEL", value = var.log_level },
    { name = "VNA_HTTP_HOST", value = "0.0.0.0" },
    { name = "VNA_DIMSE_ENABLED", value = "false" },
  ]

  container_secrets = [
    { name = "VNA_DATABASE_URL", valueFrom = aws_secretsmanager_secret.database_url.arn },
    { name = "VNA_CONFIG_TOML", valueFrom = aws_ssm_parameter.archive_config.arn },
  ]
}
