# Security groups. Inbound traffic is limited to var.pacs_cidrs; tasks accept traffic only from
# the load balancers; the database only from the tasks. Egress is limited to the ports needed.

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "DICOMweb load balancer: HTTPS from the PACS networks"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = toset(var.pacs_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "DICOMweb over HTTPS from PACS network ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "alb_http_redirect" {
  for_each = toset(var.pacs_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTP (redirected to HTTPS) from PACS network ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_gateway" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To gateway tasks (DICOMweb)"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.gateway.id
}

resource "aws_security_group" "nlb" {
  name        = "${var.name}-nlb"
  description = "DIMSE load balancer: DICOM from the PACS networks"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "nlb_dimse" {
  for_each = toset(var.pacs_cidrs)

  security_group_id = aws_security_group.nlb.id
  description       = "DIMSE (DICOM upper layer) from PACS network ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 11112
  to_port           = 11112
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "nlb_dimse_tls" {
  for_each = var.dimse_tls_certificate_arn == null ? toset([]) : toset(var.pacs_cidrs)

  security_group_id = aws_security_group.nlb.id
  description       = "DIMSE over TLS from PACS network ${each.value}"
  ip_protocol       = "tcp"
  from_port         = var.dimse_tls_port
  to_port           = var.dimse_tls_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_gateway" {
  security_group_id            = aws_security_group.nlb.id
  description                  = "To gateway tasks (DIMSE)"
  ip_protocol                  = "tcp"
  from_port                    = 11112
  to_port                      = 11112
  referenced_security_group_id = aws_security_group.gateway.id
}

resource "aws_vpc_security_group_egress_rule" "nlb_readiness_checks" {
  security_group_id            = aws_security_group.nlb.id
  description                  = "To gateway tasks (readiness checks of the DIMSE target group)"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.gateway.id
}

resource "aws_security_group" "gateway" {
  name        = "${var.name}-gateway"
  description = "Gateway tasks: DICOMweb from the ALB, DIMSE from the NLB"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "gateway_http" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "DICOMweb from the ALB"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_vpc_security_group_ingress_rule" "gateway_dimse" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "DIMSE from the NLB"
  ip_protocol                  = "tcp"
  from_port                    = 11112
  to_port                      = 11112
  referenced_security_group_id = aws_security_group.nlb.id
}

resource "aws_vpc_security_group_ingress_rule" "gateway_readiness_from_nlb" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "Readiness checks (GET /readyz) from the NLB"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.nlb.id
}

resource "aws_security_group" "worker" {
  name        = "${var.name}-worker"
  description = "Lifecycle workers and one-off tasks (DR drill): no inbound traffic"
  vpc_id      = aws_vpc.this.id
}

# Both task groups: HTTPS to AWS APIs (S3 through the gateway endpoint, ECR, Secrets Manager,
# SSM, CloudWatch through NAT) and PostgreSQL to the catalogue.
resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  for_each = {
    gateway = aws_security_group.gateway.id
    worker  = aws_security_group.worker.id
  }

  security_group_id = each.value
  description       = "HTTPS to AWS service endpoints"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "tasks_postgres" {
  for_each = {
    gateway = aws_security_group.gateway.id
    worker  = aws_security_group.worker.id
  }

  security_group_id            = each.value
  description                  = "PostgreSQL to the catalogue"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.db.id
}

resource "aws_security_group" "db" {
  name        = "${var.name}-db"
  description = "Catalogue database: PostgreSQL from the archive tasks only"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "db_from_tasks" {
  for_each = {
    gateway = aws_security_group.gateway.id
    worker  = aws_security_group.worker.id
  }

  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from ${each.key} tasks"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value
}
