# DIMSE: TCP 11112 to the gateway tasks; optionally DICOM TLS on var.dimse_tls_port, terminated
# at the NLB with an ACM certificate and forwarded to the same tasks.

resource "aws_lb" "dimse" {
  name                             = "${var.name}-dimse"
  load_balancer_type               = "network"
  internal                         = var.internal_load_balancers
  subnets                          = local.lb_subnet_ids
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection

  # NLB access logs cover the TLS listener.
  access_logs {
    bucket  = aws_s3_bucket.logs.id
    prefix  = "lb"
    enabled = true
  }

  depends_on = [aws_s3_bucket_policy.logs]
}

resource "aws_lb_target_group" "dimse" {
  name                 = "${var.name}-dimse"
  port                 = 11112
  protocol             = "TCP"
  target_type          = "ip"
  vpc_id               = aws_vpc.this.id
  deregistration_delay = 120

  # Readiness over the task's HTTP port: an open DIMSE port says nothing about whether the
  # catalogue and the bucket can take a C-STORE (issue 23: every store got A700 while a TCP
  # check passed).
  health_check {
    protocol            = "HTTP"
    port                = "8080"
    path                = "/readyz"
    matcher             = "200"
    interval            = 30
    healthy_threshold   = 3
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "dimse" {
  load_balancer_arn = aws_lb.dimse.arn
  port              = 11112
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.dimse.arn
  }
}

resource "aws_lb_listener" "dimse_tls" {
  count = var.dimse_tls_certificate_arn == null ? 0 : 1

  load_balancer_arn = aws_lb.dimse.arn
  port              = var.dimse_tls_port
  protocol          = "TLS"
  ssl_policy        = local.tls_policy
  certificate_arn   = var.dimse_tls_certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.dimse.arn
  }
}
