output "dicomweb_url" {
  description = "DICOMweb base URL (point a CNAME matching the certificate at alb_dns_name)."
  value       = "https://${aws_lb.dicomweb.dns_name}"
}

output "alb_dns_name" {
  description = "DNS name of the DICOMweb load balancer."
  value       = aws_lb.dicomweb.dns_name
}

output "nlb_dns_name" {
  description = "DNS name of the DIMSE load balancer: configure it in the hospital PACS."
  value       = aws_lb.dimse.dns_name
}

output "dimse_endpoint" {
  description = "What a hospital PACS needs: AE title, host, port (and the TLS port when enabled)."
  value = {
    ae_title = var.ae_title
    host     = aws_lb.dimse.dns_name
    port     = 11112
    tls_port = var.dimse_tls_certificate_arn == null ? null : var.dimse_tls_port
  }
}

output "primary_bucket" {
  description = "Primary archive bucket."
  value       = aws_s3_bucket.primary.bucket
}

output "dr_bucket" {
  description = "DR replica bucket (in dr_region)."
  value       = aws_s3_bucket.dr.bucket
}

output "storage_url" {
  description = "VNA_STORAGE_URL of the services."
  value       = local.storage_url
}

output "dr_storage_url" {
  description = "VNA_STORAGE_URL of the DR bucket (used by the dr-drill task)."
  value       = local.dr_storage_url
}

output "database_endpoint" {
  description = "Catalogue database endpoint (private)."
  value       = aws_db_instance.catalogue.endpoint
}

output "database_instance_arn" {
  description = "Catalogue database ARN."
  value       = aws_db_instance.catalogue.arn
}

output "database_url_secret_arn" {
  description = "Secrets Manager secret holding VNA_DATABASE_URL."
  value       = aws_secretsmanager_secret.database_url.arn
}

output "dr_automated_backups_arn" {
  description = "ARN of the catalogue's automated backups replicated to dr_region (restore source in a DR)."
  value       = aws_db_instance_automated_backups_replication.catalogue.id
}

output "ecs_cluster_name" {
  description = "ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "dr_drill_task_definition" {
  description = "Task definition family for one-off DR drills."
  value       = aws_ecs_task_definition.dr_drill.family
}

output "private_subnet_ids" {
  description = "Private subnets (for `aws ecs run-task`)."
  value       = aws_subnet.private[*].id
}

output "worker_security_group_id" {
  description = "Security group for one-off tasks (for `aws ecs run-task`)."
  value       = aws_security_group.worker.id
}

output "vpc_id" {
  description = "VPC to attach the hospital VPN / Direct Connect / transit gateway to."
  value       = aws_vpc.this.id
}

output "alarm_topic_arn" {
  description = "SNS topic receiving every alarm."
  value       = aws_sns_topic.alarms.arn
}
