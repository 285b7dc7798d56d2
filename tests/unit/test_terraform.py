"""Static checks of the AWS deployment in terraform/ (no terraform binary, no cloud).

Every ``.tf`` file is parsed with python-hcl2 and the properties a hospital security review asks
for are asserted on the parsed configuration: encryption with customer-managed keys, versioning,
no public access, TLS-only bucket policies, cross-region replication, a protected PostgreSQL
catalogue, least-privilege IAM, encrypted logs with a retention.  The container environment is
checked against the keys the archive's configuration reader actually reads.  Finally checkov runs
over the module (from its own virtualenv, ``.venv-checkov``) and must report no failed check.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

hcl2 = pytest.importorskip("hcl2")

from vna.config import environment_keys, load_settings  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TF_DIR = REPO / "terraform"
EXAMPLES = TF_DIR / "examples"

_META_KEYS = {
    "__is_block__",
    "__comments__",
    "__inline_comments__",
    "__start_line__",
    "__end_line__",
}

# Buckets that receive S3 server access logs and ELB access logs: AWS delivers those only to
# buckets encrypted with SSE-S3 (AES256), never SSE-KMS.
LOG_BUCKETS = {"logs", "dr_logs"}

# IAM actions AWS offers no resource-level permission for, allowed on Resource "*" only with a
# condition that narrows them (name of the required condition key).
UNSCOPABLE_WRITE_ACTIONS = {"cloudwatch:PutMetricData": "cloudwatch:namespace"}

READ_ACTION_PREFIXES = ("Get", "List", "Describe", "BatchGet", "BatchCheck", "Head")


# --- parsing helpers -----------------------------------------------------------------------


def _unwrap(value: str) -> str:
    """python-hcl2 v8 keeps quotes on literals and wraps expressions in ``${...}``: drop both."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    if value.startswith("${") and value.endswith("}") and value.count("${") == 1:
        return value[2:-1]
    return value


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return _unwrap(value)
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {_unwrap(k): _norm(v) for k, v in value.items() if k not in _META_KEYS}
    return value


def _load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        return hcl2.load(f)  # type: ignore[no-any-return]


class Config:
    """The merged, normalised contents of every ``.tf`` file of the root module."""

    def __init__(self, tf_dir: Path) -> None:
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}
        self.data: dict[str, dict[str, dict[str, Any]]] = {}
        self.locals: dict[str, Any] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.providers: list[tuple[str, dict[str, Any]]] = []
        self.files = sorted(tf_dir.glob("*.tf"))
        for path in self.files:
            doc = _load(path)
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for block in doc.get(kind, []):
                    for rtype, named in _norm(block).items():
                        for name, body in named.items():
                            assert name not in target.setdefault(rtype, {}), f"{rtype}.{name} twice"
                            target[rtype][name] = body
            for block in doc.get("locals", []):
                self.locals.update(_norm(block))
            for block in doc.get("variable", []):
                self.variables.update(_norm(block))
            for block in doc.get("provider", []):
                self.providers.extend(_norm(block).items())

    def res(self, rtype: str) -> dict[str, dict[str, Any]]:
        return self.resources.get(rtype, {})

    def var_default(self, expr: Any) -> Any:
        """The value of a literal, or the default of ``var.NAME``."""
        if isinstance(expr, str) and (m := re.fullmatch(r"var\.(\w+)", expr)):
            variable = self.variables[m.group(1)]
            assert "default" in variable, f"var.{m.group(1)} has no default"
            return _norm(variable["default"])
        return expr

    def policy_document(self, expr: str) -> dict[str, Any]:
        m = re.fullmatch(r"data\.aws_iam_policy_document\.(\w+)\.json", expr)
        assert m, f"policy {expr!r} is not an aws_iam_policy_document (so not checkable)"
        return self.data["aws_iam_policy_document"][m.group(1)]


def _ref(expr: Any, rtype: str) -> str | None:
    """Name of the ``rtype`` resource an expression refers to (``aws_s3_bucket.primary.id``)."""
    m = re.search(rf"\b{rtype}\.(\w+)\.", str(expr))
    return m.group(1) if m else None


def _by_bucket(cfg: Config, rtype: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for body in cfg.res(rtype).values():
        bucket = _ref(body["bucket"], "aws_s3_bucket")
        assert bucket, f"{rtype} without a bucket reference"
        out[bucket] = body
    return out


def _statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc.get("statement", []))


def _effect(statement: dict[str, Any]) -> str:
    return str(statement.get("effect", "Allow"))


def _actions(statement: dict[str, Any]) -> set[str]:
    return set(statement.get("actions", []))


def _role_allow_actions(cfg: Config, role: str) -> tuple[set[str], list[dict[str, Any]]]:
    statements: list[dict[str, Any]] = []
    for body in cfg.res("aws_iam_role_policy").values():
        if _ref(body["role"], "aws_iam_role") == role:
            statements += _statements(cfg.policy_document(body["policy"]))
    assert statements, f"role {role} has no policy"
    allowed = set().union(*(_actions(s) for s in statements if _effect(s) == "Allow"))
    return allowed, statements


@pytest.fixture(scope="module")
def cfg() -> Config:
    config = Config(TF_DIR)
    assert config.files, "no .tf files in terraform/"
    return config


# --- object storage ------------------------------------------------------------------------


def test_two_regions_and_dr_resources_in_the_second(cfg: Config) -> None:
    aliases = {body.get("alias"): body for name, body in cfg.providers if name == "aws"}
    assert None in aliases and "dr" in aliases, "need a default aws provider and alias 'dr'"
    assert aliases[None]["region"] != aliases["dr"]["region"]
    assert cfg.var_default(aliases[None]["region"]) != cfg.var_default(aliases["dr"]["region"])
    assert cfg.res("aws_s3_bucket")["dr"].get("provider") == "aws.dr"
    assert cfg.res("aws_kms_key")["dr"].get("provider") == "aws.dr"


def test_every_kms_key_is_rotated_with_a_policy(cfg: Config) -> None:
    for name, key in cfg.res("aws_kms_key").items():
        assert key.get("enable_key_rotation") is True, name
        assert key.get("policy"), f"kms key {name} has no explicit key policy"
        policy = str(key["policy"])
        assert not re.search(r'Action\s*=\s*(\[\s*)?"(\*|s3:\*)"', policy), name
        assert not re.search(r'(AWS|Principal)\s*=\s*"\*"', policy), f"{name}: wildcard principal"


def test_buckets_encrypted_with_customer_managed_keys(cfg: Config) -> None:
    buckets = set(cfg.res("aws_s3_bucket"))
    assert {"primary", "dr"} <= buckets
    sse = _by_bucket(cfg, "aws_s3_bucket_server_side_encryption_configuration")
    assert set(sse) == buckets, f"buckets without default encryption: {buckets - set(sse)}"
    for bucket, body in sse.items():
        default = body["rule"][0]["apply_server_side_encryption_by_default"][0]
        if bucket in LOG_BUCKETS:
            assert default["sse_algorithm"] == "AES256", bucket
            continue
        assert default["sse_algorithm"] == "aws:kms", bucket
        key = _ref(default.get("kms_master_key_id"), "aws_kms_key")
        assert key in cfg.res("aws_kms_key"), f"{bucket}: not a customer-managed key"
    primary_key = _ref(
        sse["primary"]["rule"][0]["apply_server_side_encryption_by_default"][0][
            "kms_master_key_id"
        ],
        "aws_kms_key",
    )
    dr_key = _ref(
        sse["dr"]["rule"][0]["apply_server_side_encryption_by_default"][0]["kms_master_key_id"],
        "aws_kms_key",
    )
    assert primary_key != dr_key, "the DR bucket needs its own key (in its own region)"


def test_buckets_versioned(cfg: Config) -> None:
    versioning = _by_bucket(cfg, "aws_s3_bucket_versioning")
    assert set(versioning) == set(cfg.res("aws_s3_bucket"))
    for bucket, body in versioning.items():
        assert body["versioning_configuration"][0]["status"] == "Enabled", bucket


def test_buckets_block_all_public_access(cfg: Config) -> None:
    pab = _by_bucket(cfg, "aws_s3_bucket_public_access_block")
    assert set(pab) == set(cfg.res("aws_s3_bucket"))
    for bucket, body in pab.items():
        for flag in (
            "block_public_acls",
            "block_public_policy",
            "ignore_public_acls",
            "restrict_public_buckets",
        ):
            assert body.get(flag) is True, f"{bucket}: {flag}"
    ownership = _by_bucket(cfg, "aws_s3_bucket_ownership_controls")
    for bucket in cfg.res("aws_s3_bucket"):
        assert ownership[bucket]["rule"][0]["object_ownership"] == "BucketOwnerEnforced"


def test_buckets_tls_only(cfg: Config) -> None:
    policies = _by_bucket(cfg, "aws_s3_bucket_policy")
    assert set(policies) == set(cfg.res("aws_s3_bucket"))
    for bucket, body in policies.items():
        doc = cfg.policy_document(body["policy"])
        denies_plain_http = any(
            _effect(s) == "Deny"
            and any(
                c["test"] == "Bool"
                and c["variable"] == "aws:SecureTransport"
                and c["values"] == ["false"]
                for c in s.get("condition", [])
            )
            and any(p["identifiers"] == ["*"] for p in s.get("principals", []))
            for s in _statements(doc)
        )
        assert denies_plain_http, f"{bucket}: no Deny on aws:SecureTransport = false"


def test_access_logging_and_notifications(cfg: Config) -> None:
    logging = _by_bucket(cfg, "aws_s3_bucket_logging")
    assert _ref(logging["primary"]["target_bucket"], "aws_s3_bucket") == "logs"
    assert _ref(logging["dr"]["target_bucket"], "aws_s3_bucket") == "dr_logs"
    lifecycle = _by_bucket(cfg, "aws_s3_bucket_lifecycle_configuration")
    assert set(lifecycle) == set(cfg.res("aws_s3_bucket")), "every bucket needs a lifecycle"


def test_object_lock_optional(cfg: Config) -> None:
    default = cfg.var_default("var.object_lock")
    assert set(default) == {"enabled", "mode", "retention_days"}
    for bucket in ("primary", "dr"):
        assert cfg.res("aws_s3_bucket")[bucket]["object_lock_enabled"] == "var.object_lock.enabled"
        lock = _by_bucket(cfg, "aws_s3_bucket_object_lock_configuration")[bucket]
        retention = lock["rule"][0]["default_retention"][0]
        assert retention["mode"] == "var.object_lock.mode"
    assert "COMPLIANCE" in str(cfg.variables["object_lock"]["validation"])


def test_lifecycle_matches_archive_tiers(cfg: Config) -> None:
    rules = _by_bucket(cfg, "aws_s3_bucket_lifecycle_configuration")["primary"]["rule"]
    tiers = next(r for r in rules if r.get("dynamic") or r.get("transition"))
    transitions = str(tiers)
    for storage_class in ("STANDARD_IA", "GLACIER_IR", "var.storage_tiers.offline_storage_class"):
        assert storage_class in transitions
    assert cfg.var_default("var.storage_tiers")["offline_storage_class"] in {
        "GLACIER",
        "DEEP_ARCHIVE",
    }
    assert "DEEP_ARCHIVE" in str(cfg.variables["storage_tiers"]["validation"])
    assert tiers["noncurrent_version_expiration"][0]["noncurrent_days"]
    assert tiers["abort_incomplete_multipart_upload"][0]["days_after_initiation"]


def test_readiness_probes_reach_the_tasks_and_expire(cfg: Config) -> None:
    """The NLB's HTTP readiness check may reach the gateway's port 8080, and the probe objects
    the gateway may not delete (health/) expire with their versions."""
    ingress = cfg.res("aws_vpc_security_group_ingress_rule")
    from_nlb = [
        r
        for r in ingress.values()
        if _ref(r["security_group_id"], "aws_security_group") == "gateway"
        and _ref(r["referenced_security_group_id"], "aws_security_group") == "nlb"
    ]
    assert {(r["from_port"], r["to_port"]) for r in from_nlb} >= {(8080, 8080)}
    egress = cfg.res("aws_vpc_security_group_egress_rule")
    assert any(
        _ref(r["security_group_id"], "aws_security_group") == "nlb" and r["from_port"] == 8080
        for r in egress.values()
    )
    # On the primary, and on the DR bucket the primary replicates them to.
    for bucket in ("primary", "dr"):
        rules = _by_bucket(cfg, "aws_s3_bucket_lifecycle_configuration")[bucket]["rule"]
        (probes,) = [r for r in rules if "health/" in str(r.get("filter"))]
        assert probes["expiration"][0]["days"] == 1, bucket
        assert probes["noncurrent_version_expiration"][0]["noncurrent_days"] == 1, bucket


def test_cross_region_replication_to_dr_bucket(cfg: Config) -> None:
    (replication,) = cfg.res("aws_s3_bucket_replication_configuration").values()
    assert _ref(replication["bucket"], "aws_s3_bucket") == "primary"
    rule = replication["rule"][0]
    assert rule["status"] == "Enabled"
    destination = rule["destination"][0]
    assert _ref(destination["bucket"], "aws_s3_bucket") == "dr"
    replica_key = destination["encryption_configuration"][0]["replica_kms_key_id"]
    assert _ref(replica_key, "aws_kms_key") == "dr"
    assert rule["source_selection_criteria"][0]["sse_kms_encrypted_objects"][0]["status"] == (
        "Enabled"
    )
    assert destination["metrics"][0]["status"] == "Enabled", "ReplicationLatency needs metrics"
    assert "var.replication_time_control" in str(destination.get("dynamic", ""))


# --- catalogue -------------------------------------------------------------------------------


def test_rds_catalogue_protected(cfg: Config) -> None:
    (db,) = cfg.res("aws_db_instance").values()
    assert db["engine"] == "postgres"
    version = str(cfg.var_default(db["engine_version"]))
    assert int(version.split(".")[0]) >= 16
    assert db["storage_encrypted"] is True
    assert _ref(db["kms_key_id"], "aws_kms_key")
    assert db["multi_az"] is True
    assert db["deletion_protection"] is True
    assert db["publicly_accessible"] is False
    assert db["skip_final_snapshot"] is False
    assert int(cfg.var_default(db["backup_retention_period"])) >= 7
    assert "var.db_backup_retention_days >= 7" in str(
        cfg.variables["db_backup_retention_days"]["validation"]
    )
    assert db["performance_insights_enabled"] is True
    assert _ref(db["performance_insights_kms_key_id"], "aws_kms_key")
    assert "postgresql" in db["enabled_cloudwatch_logs_exports"]
    assert "iam_database_authentication_enabled" in db
    params = {
        p["name"]: p["value"] for p in cfg.res("aws_db_parameter_group")["catalogue"]["parameter"]
    }
    assert params["rds.force_ssl"] == "1"


def test_rds_backups_replicated_cross_region(cfg: Config) -> None:
    (replication,) = cfg.res("aws_db_instance_automated_backups_replication").values()
    assert replication["provider"] == "aws.dr"
    assert _ref(replication["source_db_instance_arn"], "aws_db_instance")
    assert _ref(replication["kms_key_id"], "aws_kms_key") == "dr"


def test_secrets_encrypted_with_customer_keys(cfg: Config) -> None:
    for name, secret in cfg.res("aws_secretsmanager_secret").items():
        assert _ref(secret.get("kms_key_id"), "aws_kms_key"), name
    for name, param in cfg.res("aws_ssm_parameter").items():
        assert param["type"] == "SecureString", name
        assert _ref(param.get("key_id"), "aws_kms_key"), name


# --- IAM -------------------------------------------------------------------------------------


def test_all_role_policies_are_checkable_documents(cfg: Config) -> None:
    for name, body in cfg.res("aws_iam_role_policy").items():
        assert cfg.policy_document(body["policy"]), name
    assert not cfg.res("aws_iam_policy"), "use aws_iam_role_policy with a policy document"
    for name, body in cfg.res("aws_iam_role_policy_attachment").items():
        assert body["policy_arn"].endswith("policy/service-role/AmazonRDSEnhancedMonitoringRole"), (
            f"{name}: unexpected managed policy"
        )


def test_no_wildcard_iam_statements(cfg: Config) -> None:
    for name, doc in cfg.data.get("aws_iam_policy_document", {}).items():
        for statement in _statements(doc):
            if _effect(statement) != "Allow":
                continue  # a Deny on s3:* (TLS-only) only takes permissions away
            actions = _actions(statement)
            assert not actions & {"*", "s3:*"}, f"{name}: {sorted(actions)}"
            assert not any(a.endswith(":*") for a in actions), f"{name}: {sorted(actions)}"
            assert not statement.get("not_actions"), name
            if statement.get("resources") != ["*"]:
                continue
            for action in actions:
                verb = action.split(":", 1)[1]
                if verb.startswith(READ_ACTION_PREFIXES):
                    continue
                key = UNSCOPABLE_WRITE_ACTIONS.get(action)
                assert key, f"{name}: write action {action} on Resource '*'"
                variables = [c["variable"] for c in statement.get("condition", [])]
                assert key in variables, f"{name}: {action} on '*' without a {key} condition"


def test_gateway_role_cannot_delete_restore_or_retier(cfg: Config) -> None:
    allowed, statements = _role_allow_actions(cfg, "gateway_task")
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket"} <= allowed
    assert {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"} <= allowed
    forbidden = {
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "s3:RestoreObject",
        "s3:PutLifecycleConfiguration",
        "s3:PutBucketPolicy",
        "s3:PutObjectRetention",
        "s3:BypassGovernanceRetention",
    }
    assert not allowed & forbidden, sorted(allowed & forbidden)
    denies = [s for s in statements if _effect(s) == "Deny" and "s3:PutObject" in _actions(s)]
    conditions = {c["variable"] for s in denies for c in s.get("condition", [])}
    assert {"s3:x-amz-copy-source", "s3:x-amz-storage-class"} <= conditions


def test_lifecycle_role_may_delete_restore_and_retier(cfg: Config) -> None:
    allowed, _ = _role_allow_actions(cfg, "lifecycle_task")
    assert {"s3:DeleteObject", "s3:RestoreObject", "s3:GetObject", "s3:PutObject"} <= allowed


def test_only_lifecycle_role_deletes(cfg: Config) -> None:
    for name, doc in cfg.data.get("aws_iam_policy_document", {}).items():
        for statement in _statements(doc):
            if _effect(statement) == "Allow" and statement.get("actions"):
                if {"s3:DeleteObject", "s3:RestoreObject"} & _actions(statement):
                    assert name == "lifecycle_task", name


def test_task_definitions_use_their_roles(cfg: Config) -> None:
    tasks = cfg.res("aws_ecs_task_definition")
    assert _ref(tasks["gateway"]["task_role_arn"], "aws_iam_role") == "gateway_task"
    assert _ref(tasks["lifecycle"]["task_role_arn"], "aws_iam_role") == "lifecycle_task"
    for name, task in tasks.items():
        assert task["requires_compatibilities"] == ["FARGATE"], name
        assert _ref(task["execution_role_arn"], "aws_iam_role") != _ref(
            task["task_role_arn"], "aws_iam_role"
        ), name


# --- logs and monitoring ---------------------------------------------------------------------


def test_log_groups_encrypted_with_retention(cfg: Config) -> None:
    groups = cfg.res("aws_cloudwatch_log_group")
    assert groups
    for name, group in groups.items():
        assert _ref(group.get("kms_key_id"), "aws_kms_key"), f"log group {name} not encrypted"
        retention = cfg.var_default(group.get("retention_in_days"))
        assert isinstance(retention, int) and retention >= 365, name


def test_alarms(cfg: Config) -> None:
    (topic,) = cfg.res("aws_sns_topic").values()
    assert _ref(topic.get("kms_master_key_id"), "aws_kms_key")
    alarms = cfg.res("aws_cloudwatch_metric_alarm").values()
    metrics = {(a.get("namespace"), a.get("metric_name")) for a in alarms}
    metrics |= {
        (q["metric"][0]["namespace"], q["metric"][0]["metric_name"])
        for a in alarms
        for q in a.get("metric_query", [])
        if q.get("metric")
    }
    assert ("AWS/S3", "ReplicationLatency") in metrics
    assert ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count") in metrics
    assert ("VNA", "LifecycleQueueDepth") in metrics
    for alarm in alarms:
        assert alarm["alarm_actions"], alarm["alarm_name"]


# --- network and load balancers --------------------------------------------------------------


def test_ingress_limited_to_pacs_cidrs(cfg: Config) -> None:
    assert "default" not in cfg.variables["pacs_cidrs"], "pacs_cidrs must be given"
    for name, rule in cfg.res("aws_vpc_security_group_ingress_rule").items():
        source = rule.get("cidr_ipv4") or rule.get("referenced_security_group_id")
        assert source, name
        if rule.get("cidr_ipv4"):
            assert "var.pacs_cidrs" in str(rule["for_each"]), f"{name}: open to {source}"
    for name, group in cfg.res("aws_security_group").items():
        assert not group.get("ingress"), f"{name}: use separate, described rules"


def test_load_balancers(cfg: Config) -> None:
    lbs = cfg.res("aws_lb")
    listeners = cfg.res("aws_lb_listener")
    https = listeners["https"]
    assert https["protocol"] == "HTTPS" and https["certificate_arn"] == "var.certificate_arn"
    assert "TLS13-1-2" in str(cfg.locals["tls_policy"]) or "TLS13" in str(https["ssl_policy"])
    redirect = listeners["http_redirect"]["default_action"][0]
    assert redirect["type"] == "redirect" and redirect["redirect"][0]["protocol"] == "HTTPS"
    assert cfg.res("aws_lb_target_group")["dicomweb"]["port"] == 8080
    # Traffic follows readiness (/readyz: catalogue and store answer), not liveness.
    groups = cfg.res("aws_lb_target_group")
    assert groups["dicomweb"]["health_check"][0]["path"] == "/readyz"
    dimse_check = groups["dimse"]["health_check"][0]
    assert dimse_check["protocol"] == "HTTP" and dimse_check["path"] == "/readyz"
    assert str(dimse_check["port"]) == "8080"
    assert listeners["dimse"]["port"] == 11112 and listeners["dimse"]["protocol"] == "TCP"
    assert listeners["dimse_tls"]["protocol"] == "TLS"
    assert lbs["dicomweb"]["drop_invalid_header_fields"] is True
    for name, lb in lbs.items():
        assert lb["access_logs"][0]["enabled"] is True, name
    for name, service in cfg.res("aws_ecs_service").items():
        assert service["network_configuration"][0]["assign_public_ip"] is False, name
    (flow_log,) = cfg.res("aws_flow_log").values()
    assert flow_log["traffic_type"] == "ALL"


# --- container configuration -----------------------------------------------------------------


def _env_names(cfg: Config, local_name: str) -> set[str]:
    """Variable names in a list-of-{name, value} local, following concat(local.X, [...])."""
    value = cfg.locals[local_name]
    if isinstance(value, list):
        return {_unwrap(item["name"]) for item in value}
    names = set(re.findall(r'name\s*=\s*"([A-Za-z0-9_]+)"', value))
    for ref in re.findall(r"local\.(\w+)", value):
        names |= _env_names(cfg, ref)
    return names


def _container_names(cfg: Config, task: str, field: str) -> set[str]:
    definitions = cfg.res("aws_ecs_task_definition")[task]["container_definitions"]
    m = re.search(rf"\b{field}\s*=\s*local\.(\w+)", definitions)
    assert m, f"{task}: container `{field}` must be a local (checkable list of names)"
    return _env_names(cfg, m.group(1))


@pytest.mark.parametrize("task", ["gateway", "lifecycle", "dr_drill"])
def test_container_environment_is_archive_configuration(cfg: Config, task: str) -> None:
    known = set(environment_keys())
    environment = _container_names(cfg, task, "environment")
    secrets = _container_names(cfg, task, "secrets")
    assert environment <= known, f"{task}: unknown environment {sorted(environment - known)}"
    assert secrets <= known, f"{task}: unknown secrets {sorted(secrets - known)}"
    assert not environment & secrets
    names = environment | secrets
    for required in ("VNA_STORAGE_URL", "VNA_DATABASE_URL", "VNA_HTTP_HOST"):
        assert required in names, f"{task}: missing {required}"
    assert "VNA_DATABASE_URL" in secrets, "the database URL (with password) must be a secret"
    assert "VNA_CONFIG_TOML" in secrets


def test_container_environment_values(cfg: Config) -> None:
    def values(local_name: str) -> dict[str, str]:
        return {_unwrap(i["name"]): _unwrap(i["value"]) for i in cfg.locals[local_name]}

    common = values("common_environment")
    assert common["VNA_HTTP_HOST"] == "0.0.0.0"
    assert re.fullmatch(
        r"s3://\$\{aws_s3_bucket\.primary\.bucket\}\?region=\$\{var\.region\}",
        _unwrap(cfg.locals["storage_url"]),
    )
    assert 'name = "VNA_DIMSE_ENABLED", value = "false"' in cfg.locals["lifecycle_environment"]
    assert values("dr_drill_environment")["VNA_DIMSE_ENABLED"] == "false"
    tasks = cfg.res("aws_ecs_task_definition")
    assert '"vna", "serve"' in tasks["gateway"]["container_definitions"]
    assert '"vna", "lifecycle", "run"' in tasks["lifecycle"]["container_definitions"]
    for name, task in tasks.items():
        assert "readonlyRootFilesystem = true" in task["container_definitions"], name
    url = cfg.res("aws_secretsmanager_secret_version")["database_url"]["secret_string"]
    assert url.startswith("postgresql://"), url


# --- examples and image ----------------------------------------------------------------------


def _heredoc(value: str) -> str:
    m = re.fullmatch(r'"?<<-?(\w+)\n(.*)\n\s*\1"?', value, re.S)
    return textwrap.dedent(m.group(2)) if m else _unwrap(value)


@pytest.mark.parametrize("example", ["single-hospital.tfvars", "multi-hospital.tfvars"])
def test_example_tfvars(cfg: Config, example: str) -> None:
    values = _norm(_load(EXAMPLES / example))
    unknown = set(values) - set(cfg.variables)
    assert not unknown, f"{example}: undeclared variables {sorted(unknown)}"
    required = {name for name, v in cfg.variables.items() if "default" not in v}
    assert required <= set(values), f"{example}: missing {sorted(required - set(values))}"
    settings = load_settings(environ={"VNA_CONFIG_TOML": _heredoc(values["archive_config_toml"])})
    assert settings.sources, f"{example}: archive_config_toml declares no source"


#: Memory (GiB) of RDS classes the module and its examples may use.  RDS sets PostgreSQL's
#: max_connections to LEAST(DBInstanceClassMemory / 9531392, 5000); DBInstanceClassMemory is
#: somewhat below the class's memory (the OS keeps a share), hence the 0.85.
RDS_MEMORY_GIB = {
    "db.m7g.large": 8,
    "db.m7g.xlarge": 16,
    "db.r7g.large": 16,
    "db.r7g.xlarge": 32,
    "db.r7g.2xlarge": 64,
    "db.r7g.4xlarge": 128,
}


@pytest.mark.parametrize("example", [None, "single-hospital.tfvars", "multi-hospital.tfvars"])
def test_catalogue_connections_fit_without_a_pooler(cfg: Config, example: str | None) -> None:
    """The module connects the archive to RDS directly (no pooler: docs/scaling.md).  At the
    autoscaling ceilings every server process's pool (ingest.concurrency + 8 connections, one
    process per vCPU) must fit in the class's max_connections, with room for operators."""
    values = _norm(_load(EXAMPLES / example)) if example else {}

    def value(name: str) -> Any:
        return values.get(name, cfg.var_default(f"var.{name}"))

    per_process = 8 + 8  # IngestSettings.concurrency + 8 (vna.archive)
    gateway = int(value("gateway_max_count")) * min(8, int(value("gateway_cpu")) // 1024)
    lifecycle = int(value("lifecycle_max_count")) * max(1, int(value("lifecycle_cpu")) // 1024)
    needed = (gateway + lifecycle) * per_process
    memory = RDS_MEMORY_GIB[value("db_instance_class")] * 1024**3 * 0.85
    allowed = min(int(memory / 9531392), 5000)
    assert needed + 20 <= allowed, (example, needed, allowed)


def test_dockerfile() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^EXPOSE\s+8080\s+11112\s*$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*/readyz", text, re.M)
    assert re.search(r'^CMD \["vna", "serve"\]', text, re.M)
    assert "pip install ." in text
    assert (REPO / ".dockerignore").is_file()


# --- checkov ---------------------------------------------------------------------------------


def _checkov() -> Path | None:
    candidate = Path(os.environ.get("VNA_CHECKOV") or REPO / ".venv-checkov" / "bin" / "checkov")
    return candidate if candidate.is_file() else None


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    exe = _checkov()
    if exe is None:
        pytest.skip(
            "checkov not installed: python3.11 -m venv .venv-checkov && "
            ".venv-checkov/bin/pip install checkov (or set VNA_CHECKOV)"
        )
    proc = subprocess.run(
        [
            str(exe),
            "-d",
            "terraform",
            "--framework",
            "terraform",
            "--quiet",
            "--compact",
            "--skip-download",
            "-o",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}")
    if isinstance(report, list):  # one report per framework
        (report,) = [r for r in report if r.get("check_type") == "terraform"]
    return report  # type: ignore[no-any-return]


@pytest.mark.slow
def test_checkov_passes(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = checkov_report.get("results", {}).get("failed_checks", [])
    listing = "\n".join(f"{c['check_id']} {c['resource']} {c['check_name']}" for c in failed)
    assert summary["failed"] == 0, f"checkov failed checks:\n{listing}"
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0
    assert summary["skipped"] <= 5, "keep inline checkov skips few and justified"


def test_readme_points_to_the_configuration_section() -> None:
    """Administrators are sent to the documented configuration, not to the source code."""
    text = (TF_DIR / "README.md").read_text(encoding="utf-8")
    assert "vna/config.py" not in text
    assert "../README.md#configuration" in text
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^## Configuration$", readme, re.M)
