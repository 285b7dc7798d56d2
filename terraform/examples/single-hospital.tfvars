# One hospital, one PACS, sending over DIMSE and DICOMweb through a site-to-site VPN.
# terraform plan -var-file=examples/single-hospital.tfvars

name      = "vna-stmary"
region    = "eu-west-1"
dr_region = "eu-central-1"

container_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/vna:0.1.0"
certificate_arn = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"

# The hospital network behind the VPN.
pacs_cidrs = ["10.20.0.0/16"]

single_nat_gateway = true

gateway_min_count   = 2
gateway_max_count   = 4
lifecycle_min_count = 1
lifecycle_max_count = 2

db_instance_class        = "db.m7g.large"
db_allocated_storage     = 100
db_backup_retention_days = 14

alarm_email = "pacs-admins@stmary.example.org"

# Hospital PACS declaration (VNA_CONFIG_TOML). token_sha256 is the SHA-256 of the STOW-RS
# bearer token this source presents; never the token itself.
archive_config_toml = <<-EOT
  [[sources]]
  name = "STMARY"
  ae_titles = ["STMARY_PACS"]
  issuer_of_patient_id = "STMARY"
  host = "10.20.4.10"
  port = 104
  on_conflict = "reject"
EOT
