# ECS Fargate: the gateway service (DICOMweb + DIMSE, behind the ALB and NLB), the lifecycle
# worker service, and a task definition for one-off DR drills. One image for all three.

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_cloudwatch_log_group" "gateway" {
  name              = "/ecs/${var.name}/gateway"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

resource "aws_cloudwatch_log_group" "lifecycle" {
  name              = "/ecs/${var.name}/lifecycle"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

resource "aws_cloudwatch_log_group" "dr_drill" {
  name              = "/ecs/${var.name}/dr-drill"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

locals {
  # The root filesystem is read-only; the archive writes only under VNA_DATA_DIR (/data: scratch
  # for instances being received) and Python/aiohttp temp files under /tmp. Both are task
  # ephemeral storage (encrypted by Fargate); the Dockerfile declares them as VOLUMEs owned by
  # the non-root user.
  task_mount_points = [
    { sourceVolume = "data", containerPath = local.data_dir, readOnly = false },
    { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
  ]
}

resource "aws_ecs_task_definition" "gateway" {
  family                   = "${var.name}-gateway"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.gateway_cpu
  memory                   = var.gateway_memory
  execution_role_arn       = aws_iam_role.task_execution.arn
  task_role_arn            = aws_iam_role.gateway_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }

  volume {
    name = "data"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    {
      name                   = "gateway"
      image                  = var.container_image
      essential              = true
      command                = ["vna", "serve"]
      readonlyRootFilesystem = true
      privileged             = false
      portMappings = [
        { containerPort = 8080, protocol = "tcp", name = "dicomweb" },
        { containerPort = 11112, protocol = "tcp", name = "dimse" },
      ]
      environment = local.gateway_environment
      secrets     = local.container_secrets
      mountPoints = local.task_mount_points
      linuxParameters = {
        initProcessEnabled = true
      }
      # Liveness (/healthz): ECS replaces a task that fails it, which would not bring a lost
      # bucket or database back. Traffic follows readiness (/readyz) in the target groups.
      healthCheck = {
        command     = ["CMD", "python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]
        interval    = 30
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.gateway.name
          awslogs-region        = var.region
          awslogs-stream-prefix = "gateway"
        }
      }
    },
  ])
}

resource "aws_ecs_task_definition" "lifecycle" {
  family                   = "${var.name}-lifecycle"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.lifecycle_cpu
  memory                   = var.lifecycle_memory
  execution_role_arn       = aws_iam_role.task_execution.arn
  task_role_arn            = aws_iam_role.lifecycle_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }

  volume {
    name = "data"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    {
      name                   = "lifecycle"
      image                  = var.container_image
      essential              = true
      command                = ["vna", "lifecycle", "run"]
      readonlyRootFilesystem = true
      privileged             = false
      environment            = local.lifecycle_environment
      secrets                = local.container_secrets
      mountPoints            = local.task_mount_points
      linuxParameters = {
        initProcessEnabled = true
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.lifecycle.name
          awslogs-region        = var.region
          awslogs-stream-prefix = "lifecycle"
        }
      }
    },
  ])
}

# Run on demand (README: "DR drill"): `vna dr drill` against the DR bucket, read-only.
resource "aws_ecs_task_definition" "dr_drill" {
  family                   = "${var.name}-dr-drill"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.lifecycle_cpu
  memory                   = var.lifecycle_memory
  execution_role_arn       = aws_iam_role.task_execution.arn
  task_role_arn            = aws_iam_role.dr_drill_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }

  volume {
    name = "data"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    {
      name                   = "dr-drill"
      image                  = var.container_image
      essential              = true
      command                = ["vna", "dr", "drill"]
      readonlyRootFilesystem = true
      privileged             = false
      environment            = local.dr_drill_environment
      secrets                = local.container_secrets
      mountPoints            = local.task_mount_points
      linuxParameters = {
        initProcessEnabled = true
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.dr_drill.name
          awslogs-region        = var.region
          awslogs-stream-prefix = "dr-drill"
        }
      }
    },
  ])
}

# --- services ------------------------------------------------------------------------------

resource "aws_ecs_service" "gateway" {
  name                              = "${var.name}-gateway"
  cluster                           = aws_ecs_cluster.this.id
  task_definition                   = aws_ecs_task_definition.gateway.arn
  desired_count                     = var.gateway_min_count
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  health_check_grace_period_seconds = 120
  propagate_tags                    = "SERVICE"
  enable_execute_command            = false

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.gateway.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.dicomweb.arn
    container_name   = "gateway"
    container_port   = 8080
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.dimse.arn
    container_name   = "gateway"
    container_port   = 11112
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.https, aws_lb_listener.dimse]
}

resource "aws_ecs_service" "lifecycle" {
  name                   = "${var.name}-lifecycle"
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.lifecycle.arn
  desired_count          = var.lifecycle_min_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  propagate_tags         = "SERVICE"
  enable_execute_command = false

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.worker.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    ignore_changes = [desired_count]
  }
}

# --- autoscaling on CPU --------------------------------------------------------------------

resource "aws_appautoscaling_target" "gateway" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.gateway.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.gateway_min_count
  max_capacity       = var.gateway_max_count
}

resource "aws_appautoscaling_policy" "gateway_cpu" {
  name               = "${var.name}-gateway-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.gateway.service_namespace
  resource_id        = aws_appautoscaling_target.gateway.resource_id
  scalable_dimension = aws_appautoscaling_target.gateway.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_target" "lifecycle" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.lifecycle.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.lifecycle_min_count
  max_capacity       = var.lifecycle_max_count
}

resource "aws_appautoscaling_policy" "lifecycle_cpu" {
  name               = "${var.name}-lifecycle-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.lifecycle.service_namespace
  resource_id        = aws_appautoscaling_target.lifecycle.resource_id
  scalable_dimension = aws_appautoscaling_target.lifecycle.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 120
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
