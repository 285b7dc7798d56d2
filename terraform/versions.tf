terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 7.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6, < 4.0"
    }
  }

  # Configure remote state at `terraform init` time, for example:
  #   terraform init -backend-config="bucket=..." -backend-config="key=vna/terraform.tfstate" \
  #     -backend-config="region=..." -backend-config="encrypt=true" -backend-config="use_lockfile=true"
  # State holds the database password: keep it in an encrypted, access-restricted bucket.
  # backend "s3" {}
}

# Primary region: everything runs here.
provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

# Disaster-recovery region: replica bucket, its KMS key, replicated RDS backups.
provider "aws" {
  alias  = "dr"
  region = var.dr_region

  default_tags {
    tags = local.tags
  }
}
