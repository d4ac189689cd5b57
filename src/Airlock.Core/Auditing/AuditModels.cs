namespace Airlock.Core.Auditing;

/// <summary>Kinds of audit record (design.md, Audit).</summary>
public static class AuditKinds
{
    public const string SandboxCreate = "sandbox.create";
    public const string BoundaryGot = "sandbox.boundary";
    public const string ProcessStart = "process.start";
    public const string ProcessExit = "process.exit";
    public const string FileWrite = "file.write";
    public const string Timeout = "sandbox.timeout";
    public const string TimeoutChanged = "sandbox.timeout.set";
    public const string Kill = "sandbox.kill";
    public const string Failed = "sandbox.failed";
    /// <summary>The sandbox's agent missed its health checks: listed <c>unresponsive</c> (still killable, still counted).</summary>
    public const string Unresponsive = "sandbox.unresponsive";
    /// <summary>An unresponsive sandbox's agent answered again: back to <c>running</c>.</summary>
    public const string Responsive = "sandbox.responsive";
    public const string Reconcile = "airlockd.reconcile";
    public const string Pause = "sandbox.pause";
    public const string PauseFailed = "sandbox.pause.failed";
    public const string Resume = "sandbox.resume";
    public const string Reaped = "sandbox.reaped";
    public const string ApiKeyCreated = "apikey.create";
    public const string ApiKeyRevoked = "apikey.revoke";
    public const string ApiKeyRotated = "apikey.rotate";
    public const string TenantCreated = "tenant.create";
    public const string TenantUpdated = "tenant.update";
    public const string TenantDeleted = "tenant.delete";
}

/// <summary>A record to append; the chain assigns sequence, time and hashes.</summary>
public sealed record AuditEntry(string Kind, string? TenantId, string? SandboxId, string DataJson);

/// <summary>A stored, chained audit record.</summary>
public sealed record AuditRecord
{
    public required long Seq { get; init; }
    public required DateTimeOffset Time { get; init; }
    public required string Kind { get; init; }
    public string? TenantId { get; init; }
    public string? SandboxId { get; init; }
    /// <summary>Canonical JSON payload (never contains secrets).</summary>
    public required string Data { get; init; }
    /// <summary>Hex SHA-256 of the previous record ("0"*64 for the first).</summary>
    public required string PrevHash { get; init; }
    /// <summary>Hex SHA-256 over this record's canonical form including PrevHash.</summary>
    public required string Hash { get; init; }
}

/// <summary>Appends to the audit chain; the one door every recorded action passes through.</summary>
public interface IAuditLog
{
    Task<AuditRecord> AppendAsync(AuditEntry entry, CancellationToken cancellationToken);
}
