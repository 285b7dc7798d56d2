# DICOMweb: HTTPS (TLS 1.2+) on 443 with an ACM certificate, HTTP redirected to HTTPS,
# forwarded to the gateway tasks on container port 8080.

locals {
  lb_subnet_ids = var.internal_load_balancers ? aws_subnet.private[*].id : aws_subnet.public[*].id
  tls_policy    = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

resource "aws_lb" "dicomweb" {
  name                       = "${var.name}-dicomweb"
  load_balancer_type         = "application"
  internal                   = var.internal_load_balancers
  subnets                    = local.lb_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  # STOW-RS uploads of large studies: allow long-running requests.
  idle_timeout = 300

  access_logs {
    bucket  = aws_s3_bucket.logs.id
    prefix  = "lb"
    enabled = true
  }

  depends_on = [aws_s3_bucket_policy.logs]
}

resource "aws_lb_target_group" "dicomweb" {
  name                 = "${var.name}-dicomweb"
  port                 = 8080
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = aws_vpc.this.id
  deregistration_delay = 60

  # Readiness, not liveness: a task whose catalogue or bucket is unreachable gets no traffic
  # (it would answer every store with A700/503) until /readyz answers 200 again.
  health_check {
    path                = "/readyz"
    port                = "traffic-port"
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.dicomweb.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = local.tls_policy
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.dicomweb.arn
  }
}

resource "aws_lb_listener" "http_redirect" {
  load_balancer_arn = aws_lb.dicomweb.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}
