"""workspace-qdrant-mcp's queue-side objects as its state database holds them (its state
manager's tables, then its queue schema: docs/workspace-qdrant-mcp.md), for `wqscan init
--layout workspace-qdrant-mcp`, so that its daemon and its queue client work on a database
wqscan made. Written from the layout's description; the other tables of that project's
state database are not wqscan's business and are not created (so its state manager, which
builds its schema only where it finds no watch_folders, cannot start on it:
docs/workspace-qdrant-mcp.md).
"""
from __future__ import annotations

import apsw

_TS = "TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP"

DDL = (
    "CREATE TABLE watch_folders ("
    " watch_id TEXT PRIMARY KEY, path TEXT NOT NULL, collection TEXT NOT NULL,"
    " patterns TEXT NOT NULL, ignore_patterns TEXT NOT NULL,"
    " auto_ingest BOOLEAN NOT NULL DEFAULT 1, recursive BOOLEAN NOT NULL DEFAULT 1,"
    " recursive_depth INTEGER NOT NULL DEFAULT 10, debounce_seconds REAL NOT NULL DEFAULT 2.0,"
    f" enabled BOOLEAN NOT NULL DEFAULT 1, created_at {_TS}, updated_at {_TS},"
    " last_scan TIMESTAMP, metadata TEXT)",
    "CREATE INDEX idx_watch_folders_path ON watch_folders(path)",
    "CREATE INDEX idx_watch_folders_enabled ON watch_folders(enabled)",
    "CREATE INDEX idx_watch_folders_collection ON watch_folders(collection)",
    "CREATE TABLE messages ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, error_type TEXT NOT NULL,"
    " error_message TEXT NOT NULL, error_details TEXT,"
    f" occurred_timestamp {_TS}, file_path TEXT, collection_name TEXT,"
    " retry_count INTEGER DEFAULT 0)",
    "CREATE INDEX idx_messages_error_type ON messages(error_type)",
    "CREATE INDEX idx_messages_occurred_timestamp ON messages(occurred_timestamp DESC)",
    "CREATE INDEX idx_messages_file_path ON messages(file_path) WHERE file_path IS NOT NULL",
    "CREATE INDEX idx_messages_collection ON messages(collection_name)"
    " WHERE collection_name IS NOT NULL",
    "CREATE INDEX idx_messages_retry_count ON messages(retry_count)",
    "CREATE TABLE ingestion_queue ("
    " file_absolute_path TEXT PRIMARY KEY NOT NULL, collection_name TEXT NOT NULL,"
    " tenant_id TEXT DEFAULT 'default', branch TEXT DEFAULT 'main',"
    " operation TEXT NOT NULL CHECK (operation IN ('ingest', 'update', 'delete')),"
    " priority INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 10),"
    f" queued_timestamp {_TS}, retry_count INTEGER NOT NULL DEFAULT 0,"
    " retry_from TEXT, error_message_id INTEGER, metadata TEXT,"
    " FOREIGN KEY (retry_from) REFERENCES ingestion_queue(file_absolute_path)"
    " ON DELETE SET NULL)",
    "CREATE INDEX idx_ingestion_queue_priority_time"
    " ON ingestion_queue(priority DESC, queued_timestamp ASC)",
    "CREATE INDEX idx_ingestion_queue_collection"
    " ON ingestion_queue(collection_name, tenant_id, branch)",
    "CREATE INDEX idx_ingestion_queue_retry_from ON ingestion_queue(retry_from)"
    " WHERE retry_from IS NOT NULL",
    "CREATE INDEX idx_ingestion_queue_operation ON ingestion_queue(operation)",
    "CREATE INDEX idx_ingestion_queue_error ON ingestion_queue(error_message_id)"
    " WHERE error_message_id IS NOT NULL",
    "CREATE TABLE collection_metadata ("
    " collection_name TEXT PRIMARY KEY NOT NULL,"
    " collection_type TEXT NOT NULL CHECK (collection_type IN"
    " ('non-watched', 'watched-dynamic', 'watched-cumulative', 'project')),"
    f" created_timestamp {_TS}, last_updated {_TS}, configuration TEXT,"
    " tenant_id TEXT DEFAULT 'default', branch TEXT DEFAULT 'main')",
    "CREATE INDEX idx_collection_metadata_type ON collection_metadata(collection_type)",
    "CREATE INDEX idx_collection_metadata_tenant ON collection_metadata(tenant_id, branch)",
    "CREATE INDEX idx_collection_metadata_updated ON collection_metadata(last_updated)",
    "CREATE TRIGGER update_collection_metadata_timestamp AFTER UPDATE ON collection_metadata"
    " BEGIN UPDATE collection_metadata SET last_updated = CURRENT_TIMESTAMP"
    " WHERE collection_name = NEW.collection_name; END",
    "CREATE VIEW queue_statistics AS SELECT count(*) AS total_items,"
    " sum(priority >= 8) AS urgent_items,"
    " sum(priority >= 5 AND priority < 8) AS high_priority_items,"
    " sum(priority >= 3 AND priority < 5) AS normal_priority_items,"
    " sum(priority < 3) AS low_priority_items, sum(retry_count > 0) AS retry_items,"
    " sum(error_message_id IS NOT NULL) AS items_with_errors,"
    " count(DISTINCT collection_name) AS unique_collections,"
    " count(DISTINCT tenant_id) AS unique_tenants, min(queued_timestamp) AS oldest_item,"
    " max(queued_timestamp) AS newest_item FROM ingestion_queue",
    "CREATE VIEW error_summary AS SELECT error_type, count(*) AS occurrence_count,"
    " max(occurred_timestamp) AS last_occurrence, avg(retry_count) AS avg_retry_count,"
    " count(DISTINCT file_path) AS affected_files FROM messages"
    " WHERE occurred_timestamp >= datetime('now', '-7 days')"
    " GROUP BY error_type ORDER BY occurrence_count DESC",
    "CREATE VIEW collection_queue_summary AS SELECT q.collection_name, q.tenant_id, q.branch,"
    " m.collection_type, count(*) AS queued_items, avg(q.priority) AS avg_priority,"
    " min(q.queued_timestamp) AS oldest_queued, sum(q.retry_count > 0) AS items_with_retries"
    " FROM ingestion_queue AS q LEFT JOIN collection_metadata AS m"
    " ON q.collection_name = m.collection_name"
    " GROUP BY q.collection_name, q.tenant_id, q.branch, m.collection_type",
)


def create(conn: apsw.Connection) -> None:
    """That project's queue-side tables, indexes, trigger and views, in a new database."""
    for ddl in DDL:
        conn.execute(ddl)
