using Airlock.Core.Auditing;
using Airlock.Core.Storage;

namespace Airlock.Audit;

/// <summary>Appends records to the store's chain, each carrying the SHA-256 of the one before it.</summary>
public sealed class AuditChain(IStore store, TimeProvider time) : IAuditLog
{
    public Task<AuditRecord> AppendAsync(AuditEntry entry, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        return store.AppendAuditAsync(entry, time.GetUtcNow(), Link, cancellationToken);
    }

    /// <summary>Builds the next record after <paramref name="last"/>; called by the store inside its write transaction.</summary>
    public static AuditRecord Link(AuditRecord? last, DateTimeOffset time, AuditEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        var seq = (last?.Seq ?? 0) + 1;
        var prev = last?.Hash ?? AuditHash.Genesis;
        // Never earlier than the record before: the chain's times are monotonic even if the clock steps back.
        var at = last is not null && time < last.Time ? last.Time : time;
        at = DateTimeOffset.Parse(AuditHash.FormatTime(at), System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.RoundtripKind);
        return new AuditRecord
        {
            Seq = seq,
            Time = at,
            Kind = entry.Kind,
            TenantId = entry.TenantId,
            SandboxId = entry.SandboxId,
            Data = entry.DataJson,
            PrevHash = prev,
            Hash = AuditHash.Compute(seq, at, entry.Kind, entry.TenantId, entry.SandboxId, entry.DataJson, prev),
        };
    }
}
