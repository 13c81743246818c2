"""indexes on the foreign keys that deletions follow

Without them, every row a delete cascades from is a scan of the referencing table: purging a
week's mail rows read all of a year's ``recipients`` once per row (46.5 s for 1,639 rows with
530,000 recipients on PostgreSQL; 9 ms with the index: bench/postgres_at_scale.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 08:07:19.375605
"""

from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# (index, table, column): every foreign key column that no index led yet.
INDEXES = (
    ("ix_recipients_delivery_id", "recipients", "delivery_id"),
    ("ix_recipients_guardian_id", "recipients", "guardian_id"),
    ("ix_guardian_children_child_id", "guardian_children", "child_id"),
    ("ix_child_groups_group_id", "child_groups", "group_id"),
    ("ix_deliveries_school_id", "deliveries", "school_id"),
    ("ix_alerts_school_id", "alerts", "school_id"),
    ("ix_editions_decided_by", "editions", "decided_by"),
    ("ix_admin_schools_school_id", "admin_schools", "school_id"),
)


def upgrade() -> None:
    for name, table, column in INDEXES:
        op.create_index(name, table, [column], unique=False)


def downgrade() -> None:
    for name, table, _column in reversed(INDEXES):
        op.drop_index(name, table_name=table)
