# A regional archive shared by three hospitals, each its own issuer of patient IDs, with
# DICOM TLS offered next to plain DIMSE and 7-year WORM retention.
# terraform plan -var-file=examples/multi-hospital.tfvars

name      = "vna-region"
region    = "us-east-1"
dr_region = "us-west-2"

tags = {
  CostCenter = "imaging"
  DataClass  = "phi"
}

container_image           = "123456789012.dkr.ecr.us-east-1.amazonaws.com/vna:0.1.0"
certificate_arn           = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-1111-1111-1111-111111111111"
dimse_tls_certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/22222222-2222-2222-2222-222222222222"

pacs_cidrs = [
  "10.10.0.0/16", # North General
  "10.11.0.0/16", # South Valley
  "172.20.8.0/22", # Children's
]

gateway_cpu       = 4096
gateway_memory    = 8192
gateway_min_count = 3
gateway_max_count = 12

lifecycle_min_count = 2
lifecycle_max_count = 6

db_instance_class           = "db.r7g.xlarge"
db_allocated_storage        = 500
db_max_allocated_storage    = 4000
db_backup_retention_days    = 35
db_dr_backup_retention_days = 14

object_lock = {
  enabled        = true
  mode           = "COMPLIANCE"
  retention_days = 2557
}

replication_time_control = true

storage_tiers = {
  enabled               = true
  warm_after_days       = 30
  cold_after_days       = 180
  offline_after_days    = 1095
  offline_storage_class = "DEEP_ARCHIVE"
}

log_retention_days = 2192
alarm_email        = "imaging-ops@region.example.org"

archive_config_toml = <<-EOT
  [[sources]]
  name = "NORTH"
  ae_titles = ["NORTH_PACS", "NORTH_CT1"]
  issuer_of_patient_id = "NORTH"
  on_conflict = "reject"

  [[sources]]
  name = "SOUTH"
  ae_titles = ["SOUTH_PACS"]
  issuer_of_patient_id = "SOUTH"
  on_conflict = "reject"

  [[sources]]
  name = "CHILDRENS"
  ae_titles = ["CHILD_PACS"]
  issuer_of_patient_id = "CHILDRENS"
  trust_issuer = true
  on_conflict = "keep-both"
EOT
