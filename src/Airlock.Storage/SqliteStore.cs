// The SQLite store: sandboxes, the audit chain and migrations here; tenants and API keys in SqliteStore.Tenants.cs.
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;
using Airlock.Core.Storage;
using Microsoft.Data.Sqlite;

namespace Airlock.Storage;

/// <summary>
/// The embedded store: one SQLite file (<c>airlock.db</c>) in the data directory, WAL journal, numbered migrations
/// embedded in this assembly. Audit rows are append-only (triggers refuse UPDATE and DELETE).
/// </summary>
public sealed partial class SqliteStore : IStore, ITenantStore
{
    public const string FileName = "airlock.db";

    private readonly string _connectionString;
    private readonly TimeProvider _time;
    private readonly bool _readOnly;
    private readonly SemaphoreSlim _auditGate = new(1, 1);

    private SqliteStore(string connectionString, TimeProvider time, bool readOnly)
    {
        _connectionString = connectionString;
        _time = time;
        _readOnly = readOnly;
    }

    /// <summary>Path of the database file the store uses.</summary>
    public string? DatabasePath { get; private init; }

    /// <summary>Opens (creating if needed) the store in <paramref name="dataDir"/>; call <see cref="MigrateAsync"/> before use.</summary>
    public static async Task<SqliteStore> OpenAsync(string dataDir, TimeProvider time, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(dataDir);
        ArgumentNullException.ThrowIfNull(time);
        Directory.CreateDirectory(dataDir);
        var path = Path.Combine(dataDir, FileName);
        var builder = new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            ForeignKeys = true,
            DefaultTimeout = 30,
            Pooling = true,
        };
        var store = new SqliteStore(builder.ToString(), time, readOnly: false) { DatabasePath = path };
        await using var connection = await store.OpenConnectionAsync(cancellationToken);
        await ExecuteAsync(connection, "PRAGMA journal_mode=WAL;", cancellationToken);
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        return store;
    }

    /// <summary>Opens an existing store read-only (audit verify and tail on a live database).</summary>
    public static async Task<SqliteStore> OpenReadOnlyAsync(string dataDir, CancellationToken cancellationToken)
    {
        var path = Path.Combine(dataDir, FileName);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"no Airlock database at {path}", path);
        }

        var builder = new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadOnly, DefaultTimeout = 30 };
        var store = new SqliteStore(builder.ToString(), TimeProvider.System, readOnly: true) { DatabasePath = path };
        await using var connection = await store.OpenConnectionAsync(cancellationToken);
        return store;
    }

    public async Task MigrateAsync(CancellationToken cancellationToken)
    {
        if (_readOnly)
        {
            throw new InvalidOperationException("the store is open read-only");
        }

        await using var connection = await OpenConnectionAsync(cancellationToken);
        await ExecuteAsync(connection, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);", cancellationToken);
        foreach (var (version, sql) in Migrations())
        {
            await using var transaction = (SqliteTransaction)await connection.BeginTransactionAsync(cancellationToken);
            await using var check = connection.CreateCommand();
            check.Transaction = transaction;
            check.CommandText = "SELECT COUNT(*) FROM schema_version WHERE version = $v";
            check.Parameters.AddWithValue("$v", version);
            if (Convert.ToInt64(await check.ExecuteScalarAsync(cancellationToken), CultureInfo.InvariantCulture) > 0)
            {
                continue;
            }

            await using (var apply = connection.CreateCommand())
            {
                apply.Transaction = transaction;
                apply.CommandText = sql;
                await apply.ExecuteNonQueryAsync(cancellationToken);
            }

            await using (var record = connection.CreateCommand())
            {
                record.Transaction = transaction;
                record.CommandText = "INSERT INTO schema_version (version, applied_at) VALUES ($v, $t)";
                record.Parameters.AddWithValue("$v", version);
                record.Parameters.AddWithValue("$t", Format(_time.GetUtcNow()));
                await record.ExecuteNonQueryAsync(cancellationToken);
            }

            await transaction.CommitAsync(cancellationToken);
        }
    }

    public async Task InsertSandboxAsync(SandboxRecord sandbox, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(sandbox);
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = """
            INSERT INTO sandboxes (sandbox_id, tenant_id, template_id, boundary, state, failure_reason, created_at, end_at,
                access_token_hash, access_token, metadata, env_vars, report, network, limits, host_pid, on_timeout, paused_at, usage,
                node_id, lifecycle, network_policy)
            VALUES ($id, $tenant, $template, $boundary, $state, $failure, $created, $end,
                $tokenHash, $token, $metadata, $env, $report, $network, $limits, $pid, $onTimeout, $pausedAt, $usage,
                $node, $lifecycle, $networkPolicy)
            """;
        Bind(command, sandbox);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    public async Task UpdateSandboxAsync(SandboxRecord sandbox, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(sandbox);
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = """
            UPDATE sandboxes SET template_id = $template, boundary = $boundary, state = $state, failure_reason = $failure,
                created_at = $created, end_at = $end, access_token_hash = $tokenHash, access_token = $token,
                metadata = $metadata, env_vars = $env, report = $report, network = $network, limits = $limits,
                host_pid = $pid, on_timeout = $onTimeout, paused_at = $pausedAt, usage = $usage, node_id = $node,
                lifecycle = $lifecycle, network_policy = $networkPolicy
            WHERE sandbox_id = $id AND tenant_id = $tenant
            """;
        Bind(command, sandbox);
        if (await command.ExecuteNonQueryAsync(cancellationToken) != 1)
        {
            throw new KeyNotFoundException($"sandbox {sandbox.SandboxId} of tenant {sandbox.TenantId} is not in the store");
        }
    }

    public Task<SandboxRecord?> GetSandboxAsync(string tenantId, string sandboxId, CancellationToken cancellationToken) =>
        GetSandboxCoreAsync(tenantId, sandboxId, cancellationToken);

    public Task<SandboxRecord?> GetSandboxAnyTenantAsync(string sandboxId, CancellationToken cancellationToken) =>
        GetSandboxCoreAsync(null, sandboxId, cancellationToken);

    public async Task<IReadOnlyList<SandboxRecord>> ListSandboxesAsync(string? tenantId, IReadOnlyCollection<SandboxState>? states, CancellationToken cancellationToken)
    {
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        var where = new List<string>();
        if (tenantId is not null)
        {
            where.Add("tenant_id = $tenant");
            command.Parameters.AddWithValue("$tenant", tenantId);
        }

        if (states is { Count: > 0 })
        {
            var names = new List<string>();
            var i = 0;
            foreach (var state in states)
            {
                var p = "$s" + i.ToString(CultureInfo.InvariantCulture);
                names.Add(p);
                command.Parameters.AddWithValue(p, StateName(state));
                i++;
            }

            where.Add($"state IN ({string.Join(", ", names)})");
        }

        command.CommandText = SelectSandbox + (where.Count > 0 ? " WHERE " + string.Join(" AND ", where) : "") + " ORDER BY created_at, sandbox_id";
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var list = new List<SandboxRecord>();
        while (await reader.ReadAsync(cancellationToken))
        {
            list.Add(ReadSandbox(reader));
        }

        return list;
    }

    public async Task<AuditRecord> AppendAuditAsync(AuditEntry entry, DateTimeOffset time, Func<AuditRecord?, DateTimeOffset, AuditEntry, AuditRecord> link, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        ArgumentNullException.ThrowIfNull(link);
        await _auditGate.WaitAsync(cancellationToken);
        try
        {
            await using var connection = await OpenConnectionAsync(cancellationToken);
            // BEGIN IMMEDIATE: the write lock is taken before reading the chain head, so appenders in other processes serialise too.
            await using var transaction = connection.BeginTransaction(deferred: false);
            AuditRecord? last = null;
            await using (var head = connection.CreateCommand())
            {
                head.Transaction = transaction;
                head.CommandText = SelectAudit + " ORDER BY seq DESC LIMIT 1";
                await using var reader = await head.ExecuteReaderAsync(cancellationToken);
                if (await reader.ReadAsync(cancellationToken))
                {
                    last = ReadAudit(reader);
                }
            }

            var record = link(last, time, entry);
            await using (var insert = connection.CreateCommand())
            {
                insert.Transaction = transaction;
                insert.CommandText = """
                    INSERT INTO audit (seq, time, kind, tenant_id, sandbox_id, data, prev_hash, hash)
                    VALUES ($seq, $time, $kind, $tenant, $sandbox, $data, $prev, $hash)
                    """;
                insert.Parameters.AddWithValue("$seq", record.Seq);
                insert.Parameters.AddWithValue("$time", Format(record.Time));
                insert.Parameters.AddWithValue("$kind", record.Kind);
                insert.Parameters.AddWithValue("$tenant", (object?)record.TenantId ?? DBNull.Value);
                insert.Parameters.AddWithValue("$sandbox", (object?)record.SandboxId ?? DBNull.Value);
                insert.Parameters.AddWithValue("$data", record.Data);
                insert.Parameters.AddWithValue("$prev", record.PrevHash);
                insert.Parameters.AddWithValue("$hash", record.Hash);
                await insert.ExecuteNonQueryAsync(cancellationToken);
            }

            await transaction.CommitAsync(cancellationToken);
            return record;
        }
        finally
        {
            _auditGate.Release();
        }
    }

    public async IAsyncEnumerable<AuditRecord> ReadAuditAsync(long afterSeq, string? tenantId, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = SelectAudit + " WHERE seq > $after" + (tenantId is null ? "" : " AND tenant_id = $tenant") + " ORDER BY seq";
        command.Parameters.AddWithValue("$after", afterSeq);
        if (tenantId is not null)
        {
            command.Parameters.AddWithValue("$tenant", tenantId);
        }

        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            yield return ReadAudit(reader);
        }
    }

    public async IAsyncEnumerable<AuditRecord> ReadSandboxAuditAsync(string tenantId, string sandboxId, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = SelectAudit + " WHERE sandbox_id = $sandbox AND tenant_id = $tenant ORDER BY seq";
        command.Parameters.AddWithValue("$sandbox", sandboxId);
        command.Parameters.AddWithValue("$tenant", tenantId);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            yield return ReadAudit(reader);
        }
    }

    public async ValueTask DisposeAsync()
    {
        // Fold the WAL back into airlock.db so the file on disk is the whole store (backups, `audit verify` offline).
        try
        {
            await using var connection = await OpenConnectionAsync(CancellationToken.None);
            await ExecuteAsync(connection, "PRAGMA wal_checkpoint(TRUNCATE);", CancellationToken.None);
        }
        catch (SqliteException)
        {
            // Another process holds the database; its own close checkpoints.
        }

        _auditGate.Dispose();
        SqliteConnection.ClearAllPools();
    }

    /// <summary>Round-trip time format; the audit hash covers exactly this text.</summary>
    public static string Format(DateTimeOffset time) => time.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture);

    private static DateTimeOffset Parse(string text) => DateTimeOffset.ParseExact(text, "O", CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind);

    private const string SelectAudit = "SELECT seq, time, kind, tenant_id, sandbox_id, data, prev_hash, hash FROM audit";

    private const string SelectSandbox = """
        SELECT sandbox_id, tenant_id, template_id, boundary, state, failure_reason, created_at, end_at, access_token_hash,
            access_token, metadata, env_vars, report, network, limits, host_pid, on_timeout, paused_at, usage, node_id, lifecycle,
            network_policy FROM sandboxes
        """;

    private async Task<SandboxRecord?> GetSandboxCoreAsync(string? tenantId, string sandboxId, CancellationToken cancellationToken)
    {
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = SelectSandbox + " WHERE sandbox_id = $id" + (tenantId is null ? "" : " AND tenant_id = $tenant");
        command.Parameters.AddWithValue("$id", sandboxId);
        if (tenantId is not null)
        {
            command.Parameters.AddWithValue("$tenant", tenantId);
        }

        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? ReadSandbox(reader) : null;
    }

    private async Task<SqliteConnection> OpenConnectionAsync(CancellationToken cancellationToken)
    {
        var connection = new SqliteConnection(_connectionString);
        try
        {
            await connection.OpenAsync(cancellationToken);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }

    private static async Task ExecuteAsync(SqliteConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    private static IEnumerable<(int Version, string Sql)> Migrations()
    {
        var assembly = typeof(SqliteStore).Assembly;
        const string marker = ".Migrations.Sqlite.";
        var found = new List<(int, string)>();
        foreach (var name in assembly.GetManifestResourceNames())
        {
            var at = name.IndexOf(marker, StringComparison.Ordinal);
            if (at < 0 || !name.EndsWith(".sql", StringComparison.Ordinal))
            {
                continue;
            }

            var file = name[(at + marker.Length)..];
            var digits = file.Split('_', 2)[0];
            if (!int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var version))
            {
                throw new InvalidOperationException($"migration resource {name} does not start with a number");
            }

            using var stream = assembly.GetManifestResourceStream(name)!;
            using var reader = new StreamReader(stream);
            found.Add((version, reader.ReadToEnd()));
        }

        return found.OrderBy(m => m.Item1);
    }

    private static string StateName(SandboxState state) => state.ToString().ToLowerInvariant();

    private static void Bind(SqliteCommand command, SandboxRecord s)
    {
        var p = command.Parameters;
        p.AddWithValue("$id", s.SandboxId);
        p.AddWithValue("$tenant", s.TenantId);
        p.AddWithValue("$template", s.TemplateId);
        p.AddWithValue("$boundary", s.Boundary.Name());
        p.AddWithValue("$state", StateName(s.State));
        p.AddWithValue("$failure", (object?)s.FailureReason ?? DBNull.Value);
        p.AddWithValue("$created", Format(s.CreatedAt));
        p.AddWithValue("$end", Format(s.EndAt));
        p.AddWithValue("$tokenHash", s.AccessTokenHash);
        p.AddWithValue("$token", (object?)s.AccessToken ?? DBNull.Value);
        p.AddWithValue("$metadata", JsonSerializer.Serialize(ToDictionary(s.Metadata), StorageJsonContext.Default.DictionaryStringString));
        p.AddWithValue("$env", JsonSerializer.Serialize(ToDictionary(s.EnvVars), StorageJsonContext.Default.DictionaryStringString));
        p.AddWithValue("$report", s.Report is null ? DBNull.Value : JsonSerializer.Serialize(s.Report, StorageJsonContext.Default.BoundaryReport));
        p.AddWithValue("$network", s.Network is null ? DBNull.Value : JsonSerializer.Serialize(s.Network, StorageJsonContext.Default.SandboxNetwork));
        p.AddWithValue("$limits", JsonSerializer.Serialize(s.Limits, StorageJsonContext.Default.SandboxLimits));
        p.AddWithValue("$pid", (object?)s.HostPid ?? DBNull.Value);
        p.AddWithValue("$onTimeout", s.Lifecycle.OnTimeout == TimeoutAction.Pause ? "pause" : "kill");
        p.AddWithValue("$node", s.NodeId);
        p.AddWithValue("$lifecycle", JsonSerializer.Serialize(s.Lifecycle, StorageJsonContext.Default.LifecycleSettings));
        p.AddWithValue("$networkPolicy", JsonSerializer.Serialize(s.NetworkPolicy, StorageJsonContext.Default.NetworkPolicy));
        p.AddWithValue("$pausedAt", s.PausedAt is { } paused ? Format(paused) : DBNull.Value);
        p.AddWithValue("$usage", JsonSerializer.Serialize(s.Usage, StorageJsonContext.Default.SandboxUsage));
    }

    private static Dictionary<string, string> ToDictionary(IReadOnlyDictionary<string, string> source) =>
        source as Dictionary<string, string> ?? source.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);

    private static SandboxRecord ReadSandbox(SqliteDataReader r)
    {
        if (!BoundaryMapping.TryParse(r.GetString(3), out var boundary))
        {
            throw new InvalidDataException($"sandbox {r.GetString(0)} has unknown boundary '{r.GetString(3)}'");
        }

        return new SandboxRecord
        {
            SandboxId = r.GetString(0),
            TenantId = r.GetString(1),
            TemplateId = r.GetString(2),
            Boundary = boundary,
            State = Enum.Parse<SandboxState>(r.GetString(4), ignoreCase: true),
            FailureReason = r.IsDBNull(5) ? null : r.GetString(5),
            CreatedAt = Parse(r.GetString(6)),
            EndAt = Parse(r.GetString(7)),
            AccessTokenHash = r.GetString(8),
            AccessToken = r.IsDBNull(9) ? null : r.GetString(9),
            Metadata = JsonSerializer.Deserialize(r.GetString(10), StorageJsonContext.Default.DictionaryStringString) ?? [],
            EnvVars = JsonSerializer.Deserialize(r.GetString(11), StorageJsonContext.Default.DictionaryStringString) ?? [],
            Report = r.IsDBNull(12) ? null : JsonSerializer.Deserialize(r.GetString(12), StorageJsonContext.Default.BoundaryReport),
            Network = r.IsDBNull(13) ? null : JsonSerializer.Deserialize(r.GetString(13), StorageJsonContext.Default.SandboxNetwork),
            Limits = JsonSerializer.Deserialize(r.GetString(14), StorageJsonContext.Default.SandboxLimits) ?? new SandboxLimits(),
            HostPid = r.IsDBNull(15) ? null : r.GetInt32(15),
            Lifecycle = r.IsDBNull(20) ? new LifecycleSettings { OnTimeout = r.GetString(16) == "pause" ? TimeoutAction.Pause : TimeoutAction.Kill }
                : JsonSerializer.Deserialize(r.GetString(20), StorageJsonContext.Default.LifecycleSettings) ?? new LifecycleSettings(),
            NodeId = r.GetString(19),
            NetworkPolicy = r.IsDBNull(21) ? NetworkPolicy.DenyAll : JsonSerializer.Deserialize(r.GetString(21), StorageJsonContext.Default.NetworkPolicy) ?? NetworkPolicy.DenyAll,
            PausedAt = r.IsDBNull(17) ? null : Parse(r.GetString(17)),
            Usage = r.IsDBNull(18) ? new SandboxUsage() : JsonSerializer.Deserialize(r.GetString(18), StorageJsonContext.Default.SandboxUsage) ?? new SandboxUsage(),
        };
    }

    private static AuditRecord ReadAudit(SqliteDataReader r) => new()
    {
        Seq = r.GetInt64(0),
        Time = Parse(r.GetString(1)),
        Kind = r.GetString(2),
        TenantId = r.IsDBNull(3) ? null : r.GetString(3),
        SandboxId = r.IsDBNull(4) ? null : r.GetString(4),
        Data = r.GetString(5),
        PrevHash = r.GetString(6),
        Hash = r.GetString(7),
    };
}
