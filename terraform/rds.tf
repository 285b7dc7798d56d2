# Catalogue: RDS for PostgreSQL, Multi-AZ, KMS-encrypted, point-in-time recovery, deletion
# protection, TLS enforced, logs exported, automated backups replicated to the DR region.
#
# The archive reads one URL (VNA_DATABASE_URL), so the module generates the password and stores
# the complete URL in Secrets Manager (KMS-encrypted) for the task definitions' `secrets`.
# The password is also in Terraform state: keep state in an encrypted, access-restricted
# backend (README). Rotate with `terraform apply -replace=random_password.db`.

locals {
  db_identifier = "${var.name}-catalogue"
  db_family     = "postgres${split(".", var.db_engine_version)[0]}"
}

resource "random_password" "db" {
  length  = 40
  special = false # the password goes into a URL unescaped
}

resource "aws_db_subnet_group" "catalogue" {
  name       = local.db_identifier
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_db_parameter_group" "catalogue" {
  name   = "${local.db_identifier}-${local.db_family}"
  family = local.db_family

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_connections"
    value = "1"
  }

  parameter {
    name  = "log_disconnections"
    value = "1"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  lifecycle {
    create_before_destroy = true
  }
}

# Pre-created so that exported PostgreSQL logs are KMS-encrypted with a retention.
resource "aws_cloudwatch_log_group" "rds" {
  for_each = toset(["postgresql", "upgrade"])

  name              = "/aws/rds/instance/${local.db_identifier}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

resource "aws_db_instance" "catalogue" {
  identifier     = local.db_identifier
  engine         = "postgres"
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.rds.arn

  db_name  = var.db_name
  username = var.db_username
  password = random_password.db.result
  port     = 5432

  multi_az               = true
  db_subnet_group_name   = aws_db_subnet_group.catalogue.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.catalogue.name
  ca_cert_identifier     = "rds-ca-rsa2048-g1"

  iam_database_authentication_enabled = var.db_iam_authentication

  # Point-in-time recovery within the retention window.
  backup_retention_period   = var.db_backup_retention_days
  backup_window             = "03:00-04:00"
  maintenance_window        = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot     = true
  delete_automated_backups  = false
  deletion_protection       = true
  skip_final_snapshot       = false
  final_snapshot_identifier = "${local.db_identifier}-final"

  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false
  apply_immediately           = false

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.rds.arn
  performance_insights_retention_period = 7

  monitoring_interval = 60
  monitoring_role_arn = aws_iam_role.rds_monitoring.arn

  enabled_cloudwatch_logs_exports = ["postgresql", "upgrade"]

  depends_on = [aws_cloudwatch_log_group.rds]
}

# DR: automated backups (snapshots + transaction logs) copied continuously to the DR region,
# so the catalogue can be restored there to any point in the replicated retention window.
resource "aws_db_instance_automated_backups_replication" "catalogue" {
  provider = aws.dr

  source_db_instance_arn = aws_db_instance.catalogue.arn
  kms_key_id             = aws_kms_key.dr.arn
  retention_period       = var.db_dr_backup_retention_days
}

# --- secrets --------------------------------------------------------------------------------

resource "aws_secretsmanager_secret" "database_url" {
  #checkov:skip=CKV2_AWS_57:The value is a URL embedding the Terraform-managed password; it is rotated with `terraform apply -replace=random_password.db`, which updates the database and this secret together
  name                    = "${var.name}/database-url"
  description             = "VNA_DATABASE_URL of the ${var.name} archive"
  kms_key_id              = aws_kms_key.rds.arn
  recovery_window_in_days = 30
}

resource "aws_secretsmanager_secret_version" "database_url" {
  secret_id     = aws_secretsmanager_secret.database_url.id
  secret_string = "postgresql://${var.db_username}:${random_password.db.result}@${aws_db_instance.catalogue.address}:${aws_db_instance.catalogue.port}/${var.db_name}?sslmode=require"
}

resource "aws_ssm_parameter" "archive_config" {
  name        = "/${var.name}/config-toml"
  description = "VNA_CONFIG_TOML of the ${var.name} archive (hospital PACS sources)"
  type        = "SecureString"
  key_id      = aws_kms_key.rds.arn
  tier        = length(var.archive_config_toml) > 4096 ? "Advanced" : "Standard"
  value       = var.archive_config_toml
}
