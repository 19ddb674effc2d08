import config.models
from django.db import migrations, models

FORWARD = """
CREATE OR REPLACE FUNCTION governance_auditcheckpoint_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit checkpoints are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER governance_auditcheckpoint_no_update_delete
    BEFORE UPDATE OR DELETE ON governance_auditcheckpoint
    FOR EACH ROW EXECUTE FUNCTION governance_auditcheckpoint_refuse_change();

CREATE TRIGGER governance_auditcheckpoint_no_truncate
    BEFORE TRUNCATE ON governance_auditcheckpoint
    FOR EACH STATEMENT EXECUTE FUNCTION governance_auditcheckpoint_refuse_change();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS governance_auditcheckpoint_no_truncate ON governance_auditcheckpoint;
DROP TRIGGER IF EXISTS governance_auditcheckpoint_no_update_delete ON governance_auditcheckpoint;
DROP FUNCTION IF EXISTS governance_auditcheckpoint_refuse_change();
"""


class Migration(migrations.Migration):
    """Signed checkpoints of the audit chain head, refused UPDATE/DELETE/TRUNCATE like the events."""

    dependencies = [("governance", "0004_evaluation_cases")]

    operations = [
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                ("id", models.UUIDField(default=config.models.uuid7, editable=False, primary_key=True, serialize=False)),
                ("seq", models.BigIntegerField(unique=True)),
                ("hash", models.CharField(max_length=64)),
                ("signed_at", models.DateTimeField(db_index=True)),
                ("signature", models.CharField(max_length=64)),
            ],
            options={"ordering": ["seq"]},
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
