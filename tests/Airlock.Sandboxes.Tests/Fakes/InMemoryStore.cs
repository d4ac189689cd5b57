using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;
using Airlock.Core.Storage;

namespace Airlock.Sandboxes.Tests.Fakes;

/// <summary>Sandboxes and the audit chain in memory; every call completes synchronously.</summary>
internal sealed class InMemoryStore : IStore
{
    private readonly ConcurrentDictionary<string, SandboxRecord> _sandboxes = new(StringComparer.Ordinal);
    private readonly Lock _auditLock = new();
    private readonly List<AuditRecord> _audit = [];

    public IReadOnlyList<AuditRecord> Audit
    {
        get
        {
            lock (_auditLock)
            {
                return [.. _audit];
            }
        }
    }

    public IReadOnlyCollection<SandboxRecord> Sandboxes => [.. _sandboxes.Values];

    public SandboxRecord this[string sandboxId] => _sandboxes[sandboxId];

    /// <summary>Puts a record as it is (a store left by an earlier airlockd or by another node).</summary>
    public void Seed(SandboxRecord record) => _sandboxes[record.SandboxId] = record;

    public Task MigrateAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task<Tenant> CreateTenantAsync(string name, CancellationToken cancellationToken) => throw new NotSupportedException();

    public Task<IReadOnlyList<Tenant>> ListTenantsAsync(CancellationToken cancellationToken) => throw new NotSupportedException();

    public Task AddApiKeyAsync(ApiKeyRecord key, CancellationToken cancellationToken) => throw new NotSupportedException();

    public Task<ApiKeyRecord?> FindApiKeyByHashAsync(string keyHash, CancellationToken cancellationToken) => throw new NotSupportedException();

    public Task InsertSandboxAsync(SandboxRecord sandbox, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return _sandboxes.TryAdd(sandbox.SandboxId, sandbox) ? Task.CompletedTask : throw new InvalidOperationException($"duplicate sandbox {sandbox.SandboxId}");
    }

    public Task UpdateSandboxAsync(SandboxRecord sandbox, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        _sandboxes[sandbox.SandboxId] = sandbox;
        return Task.CompletedTask;
    }

    public Task<SandboxRecord?> GetSandboxAsync(string tenantId, string sandboxId, CancellationToken cancellationToken) =>
        Task.FromResult(_sandboxes.TryGetValue(sandboxId, out var r) && r.TenantId == tenantId ? r : null);

    public Task<SandboxRecord?> GetSandboxAnyTenantAsync(string sandboxId, CancellationToken cancellationToken) =>
        Task.FromResult(_sandboxes.GetValueOrDefault(sandboxId));

    public Task<IReadOnlyList<SandboxRecord>> ListSandboxesAsync(string? tenantId, IReadOnlyCollection<SandboxState>? states, CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<SandboxRecord>>(_sandboxes.Values
            .Where(r => (tenantId is null || r.TenantId == tenantId) && (states is null || states.Contains(r.State)))
            .ToList());

    public Task<AuditRecord> AppendAuditAsync(AuditEntry entry, DateTimeOffset time, Func<AuditRecord?, DateTimeOffset, AuditEntry, AuditRecord> link, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        lock (_auditLock)
        {
            var record = link(_audit.Count == 0 ? null : _audit[^1], time, entry);
            _audit.Add(record);
            return Task.FromResult(record);
        }
    }

    public async IAsyncEnumerable<AuditRecord> ReadAuditAsync(long afterSeq, string? tenantId, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        foreach (var record in Audit)
        {
            if (record.Seq > afterSeq && (tenantId is null || record.TenantId == tenantId))
            {
                yield return record;
            }
        }

        await Task.CompletedTask;
    }

    public IAsyncEnumerable<AuditRecord> ReadSandboxAuditAsync(string tenantId, string sandboxId, CancellationToken cancellationToken) =>
        ReadAuditAsync(0, tenantId, cancellationToken).Where(r => r.SandboxId == sandboxId);

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>An audit log that appends to the store's list, linked to the previous record; can be told to fail one kind.</summary>
internal sealed class ListAuditLog(InMemoryStore store, TimeProvider time) : IAuditLog
{
    /// <summary>Appends of this kind throw (a full disk, a cancelled request).</summary>
    public string? FailKind { get; set; }

    public Task<AuditRecord> AppendAsync(AuditEntry entry, CancellationToken cancellationToken)
    {
        if (entry.Kind == FailKind)
        {
            throw new IOException($"audit append of {entry.Kind} failed");
        }

        return store.AppendAuditAsync(entry, time.GetUtcNow(), static (previous, at, e) => new AuditRecord
        {
            Seq = (previous?.Seq ?? 0) + 1,
            Time = at,
            Kind = e.Kind,
            TenantId = e.TenantId,
            SandboxId = e.SandboxId,
            Data = e.DataJson,
            PrevHash = previous?.Hash ?? new string('0', 64),
            Hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes($"{previous?.Hash}|{e.Kind}|{e.SandboxId}|{e.DataJson}"))),
        }, cancellationToken);
    }
}
