# --- deployment ----------------------------------------------------------------------------

variable "name" {
  description = "Deployment name, used as a prefix for every resource (lowercase letters, digits, hyphens)."
  type        = string
  default     = "vna"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name))
    error_message = "name must be 3-20 characters of lowercase letters, digits and hyphens."
  }
}

variable "region" {
  description = "Primary AWS region (archive, catalogue, compute)."
  type        = string
  default     = "us-east-1"
}

variable "dr_region" {
  description = "Disaster-recovery region: replica bucket and replicated database backups."
  type        = string
  default     = "us-west-2"
}

variable "tags" {
  description = "Extra tags applied to every resource."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Deletion protection on the load balancers. The database always has it."
  type        = bool
  default     = true
}

# --- network -------------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR of the VPC this module creates (two public and two private subnets across two AZs)."
  type        = string
  default     = "10.60.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be a valid IPv4 CIDR block."
  }
}

variable "availability_zones" {
  description = "The two availability zone names to use (null: REGIONa and REGIONb)."
  type        = list(string)
  default     = null

  validation {
    condition     = var.availability_zones == null ? true : length(var.availability_zones) == 2
    error_message = "availability_zones must name exactly two zones."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for both AZs (cheaper, not AZ-redundant). Default: one per AZ."
  type        = bool
  default     = false
}

variable "pacs_cidrs" {
  description = "CIDR blocks of the hospital PACS / modality networks allowed to reach DICOMweb and DIMSE."
  type        = list(string)

  validation {
    condition     = length(var.pacs_cidrs) > 0 && alltrue([for c in var.pacs_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "pacs_cidrs must be a non-empty list of valid CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "internal_load_balancers" {
  description = "Place the ALB and NLB in private subnets (reached over VPN / Direct Connect). Set false only with a WAF in front."
  type        = bool
  default     = true
}

# --- compute -------------------------------------------------------------------------------

variable "container_image" {
  description = "Archive image (built from the repository's Dockerfile), e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/vna:0.1.0."
  type        = string
}

variable "gateway_cpu" {
  description = "Fargate CPU units of one gateway task."
  type        = number
  default     = 2048
}

variable "gateway_memory" {
  description = "Fargate memory (MiB) of one gateway task."
  type        = number
  default     = 4096
}

variable "gateway_min_count" {
  description = "Minimum (and initial) number of gateway tasks."
  type        = number
  default     = 2

  validation {
    condition     = var.gateway_min_count >= 1
    error_message = "gateway_min_count must be at least 1."
  }
}

variable "gateway_max_count" {
  description = "Maximum number of gateway tasks for CPU autoscaling."
  type        = number
  default     = 8
}

variable "lifecycle_cpu" {
  description = "Fargate CPU units of one lifecycle worker task."
  type        = number
  default     = 1024
}

variable "lifecycle_memory" {
  description = "Fargate memory (MiB) of one lifecycle worker task."
  type        = number
  default     = 2048
}

variable "lifecycle_min_count" {
  description = "Minimum (and initial) number of lifecycle worker tasks."
  type        = number
  default     = 1
}

variable "lifecycle_max_count" {
  description = "Maximum number of lifecycle worker tasks for CPU autoscaling."
  type        = number
  default     = 4
}

variable "cpu_target_percent" {
  description = "Target average CPU utilisation for service autoscaling."
  type        = number
  default     = 60
}

variable "ephemeral_storage_gib" {
  description = "Fargate ephemeral storage per task (GiB, 21-200): scratch space for instances being received."
  type        = number
  default     = 100

  validation {
    condition     = var.ephemeral_storage_gib >= 21 && var.ephemeral_storage_gib <= 200
    error_message = "ephemeral_storage_gib must be between 21 and 200."
  }
}

# --- archive configuration -----------------------------------------------------------------

variable "archive_config_toml" {
  description = "TOML document passed as VNA_CONFIG_TOML (hospital PACS declarations: [[sources]] tables). Stored as an SSM SecureString."
  type        = string
  sensitive   = true

  validation {
    condition     = length(trimspace(var.archive_config_toml)) > 0
    error_message = "archive_config_toml must not be empty; declare at least one [[sources]] table."
  }
}

variable "ae_title" {
  description = "DIMSE Application Entity title of the archive (VNA_DIMSE_AE_TITLE)."
  type        = string
  default     = "VNA"

  validation {
    condition     = can(regex("^[ -\\[\\]-~]{1,16}$", var.ae_title))
    error_message = "ae_title must be 1-16 printable ASCII characters without a backslash."
  }
}

variable "dimse_max_associations" {
  description = "Concurrent DIMSE associations per gateway task (VNA_DIMSE_MAX_ASSOCIATIONS)."
  type        = number
  default     = 32
}

variable "log_level" {
  description = "Archive log level (VNA_LOG_LEVEL)."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

# --- load balancers ------------------------------------------------------------------------

variable "certificate_arn" {
  description = "ACM certificate ARN for the ALB HTTPS listener (DICOMweb)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "dimse_tls_certificate_arn" {
  description = "ACM certificate ARN for an optional DICOM TLS listener on the NLB (port dimse_tls_port). Null: plain TCP 11112 only."
  type        = string
  default     = null
}

variable "dimse_tls_port" {
  description = "Port of the optional DICOM TLS listener (2762 is the IANA port for DICOM over TLS)."
  type        = number
  default     = 2762
}

# --- object storage ------------------------------------------------------------------------

variable "storage_tiers" {
  description = <<-EOT
    Age-based S3 lifecycle transitions matching the archive's tiers: warm = STANDARD_IA,
    cold = GLACIER_IR, offline = GLACIER or DEEP_ARCHIVE. Set enabled = false when the archive's
    lifecycle worker alone decides tiers.
  EOT
  type = object({
    enabled               = bool
    warm_after_days       = number
    cold_after_days       = number
    offline_after_days    = number
    offline_storage_class = string
  })
  default = {
    enabled               = true
    warm_after_days       = 30
    cold_after_days       = 90
    offline_after_days    = 730
    offline_storage_class = "DEEP_ARCHIVE"
  }

  validation {
    condition = (
      var.storage_tiers.warm_after_days >= 30 &&
      var.storage_tiers.cold_after_days >= var.storage_tiers.warm_after_days + 30 &&
      var.storage_tiers.offline_after_days >= var.storage_tiers.cold_after_days + 90 &&
      contains(["GLACIER", "DEEP_ARCHIVE"], var.storage_tiers.offline_storage_class)
    )
    error_message = "Need warm >= 30 days, cold >= warm + 30, offline >= cold + 90, offline class GLACIER or DEEP_ARCHIVE."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which an overwritten or deleted object version is removed for good."
  type        = number
  default     = 90
}

variable "object_lock" {
  description = "S3 Object Lock (WORM) default retention. Enabling it on an existing deployment replaces the buckets."
  type = object({
    enabled        = bool
    mode           = string
    retention_days = number
  })
  default = {
    enabled        = false
    mode           = "GOVERNANCE"
    retention_days = 2557
  }

  validation {
    condition     = contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock.mode) && var.object_lock.retention_days >= 1
    error_message = "object_lock.mode must be GOVERNANCE or COMPLIANCE and retention_days at least 1."
  }
}

variable "replication_time_control" {
  description = "S3 Replication Time Control (99.99% of objects replicated within 15 minutes; extra cost per GB)."
  type        = bool
  default     = false
}

variable "replicate_delete_markers" {
  description = "Replicate delete markers to the DR bucket. False keeps the DR copy when an object is deleted in the primary."
  type        = bool
  default     = false
}

variable "dr_storage_class" {
  description = "Storage class replicas are written in, in the DR bucket."
  type        = string
  default     = "STANDARD_IA"

  validation {
    condition     = contains(["STANDARD", "STANDARD_IA", "GLACIER_IR"], var.dr_storage_class)
    error_message = "dr_storage_class must be STANDARD, STANDARD_IA or GLACIER_IR (readable without a restore)."
  }
}

variable "access_log_retention_days" {
  description = "Days S3 server access logs and load balancer logs are kept."
  type        = number
  default     = 400
}

# --- catalogue (RDS PostgreSQL) ------------------------------------------------------------

variable "db_engine_version" {
  description = "PostgreSQL engine version (major, or major.minor). 16 or newer."
  type        = string
  default     = "16"

  validation {
    condition     = tonumber(split(".", var.db_engine_version)[0]) >= 16
    error_message = "db_engine_version must be PostgreSQL 16 or newer."
  }
}

variable "db_instance_class" {
  description = "RDS instance class of the catalogue."
  type        = string
  default     = "db.m7g.large"
}

variable "db_allocated_storage" {
  description = "Initial catalogue storage (GiB)."
  type        = number
  default     = 100
}

variable "db_max_allocated_storage" {
  description = "Storage autoscaling ceiling (GiB)."
  type        = number
  default     = 1000
}

variable "db_name" {
  description = "Catalogue database name."
  type        = string
  default     = "vna"
}

variable "db_username" {
  description = "Catalogue master user name."
  type        = string
  default     = "vna"
}

variable "db_backup_retention_days" {
  description = "Automated backup retention (point-in-time recovery window), days."
  type        = number
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be between 7 and 35."
  }
}

variable "db_dr_backup_retention_days" {
  description = "Retention of the automated backups replicated to the DR region, days."
  type        = number
  default     = 7

  validation {
    condition     = var.db_dr_backup_retention_days >= 7 && var.db_dr_backup_retention_days <= 35
    error_message = "db_dr_backup_retention_days must be between 7 and 35."
  }
}

variable "db_iam_authentication" {
  description = "Enable IAM database authentication (for operators; the archive itself uses the password in its URL)."
  type        = bool
  default     = true
}

# --- monitoring ----------------------------------------------------------------------------

variable "log_retention_days" {
  description = "CloudWatch Logs retention (days) for every log group this module creates."
  type        = number
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch retention value of at least 365 days."
  }
}

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic (null: subscribe something yourself)."
  type        = string
  default     = null
}

variable "replication_latency_alarm_seconds" {
  description = "Alarm when S3 ReplicationLatency to the DR bucket exceeds this many seconds."
  type        = number
  default     = 900
}

variable "alb_5xx_alarm_threshold" {
  description = "Alarm when the ALB returns more than this many 5xx responses in 5 minutes."
  type        = number
  default     = 10
}

variable "lifecycle_queue_depth_alarm_threshold" {
  description = "Alarm when VNA/LifecycleQueueDepth stays above this for 30 minutes."
  type        = number
  default     = 10000
}
