using Airlock.Core.Auditing;

namespace Airlock.Audit;

/// <summary>Outcome of walking a chain: Ok, or the first record that does not hold and why.</summary>
public sealed record AuditVerifyResult(bool Ok, long Count, long? FirstBrokenSeq, string? Reason);

/// <summary>Walks the audit chain from its first record, recomputing every hash and link.</summary>
public static class AuditVerifier
{
    public static async Task<AuditVerifyResult> VerifyAsync(IAsyncEnumerable<AuditRecord> records, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(records);
        long count = 0;
        AuditRecord? previous = null;
        await foreach (var record in records.WithCancellation(cancellationToken))
        {
            count++;
            var expectedSeq = (previous?.Seq ?? 0) + 1;
            if (record.Seq != expectedSeq)
            {
                return Broken(count, record.Seq, $"record {record.Seq} follows record {previous?.Seq ?? 0}: records {expectedSeq}..{record.Seq - 1} are missing");
            }

            var expectedPrev = previous?.Hash ?? AuditHash.Genesis;
            if (!string.Equals(record.PrevHash, expectedPrev, StringComparison.Ordinal))
            {
                return Broken(count, record.Seq, $"record {record.Seq} links to {Short(record.PrevHash)} but the record before it hashes to {Short(expectedPrev)}");
            }

            var actual = AuditHash.Compute(record.Seq, record.Time, record.Kind, record.TenantId, record.SandboxId, record.Data, record.PrevHash);
            if (!string.Equals(actual, record.Hash, StringComparison.Ordinal))
            {
                return Broken(count, record.Seq, $"record {record.Seq} ({record.Kind}) does not match its stored hash: its content was changed");
            }

            previous = record;
        }

        return new AuditVerifyResult(true, count, null, null);
    }

    private static AuditVerifyResult Broken(long count, long seq, string reason) => new(false, count, seq, reason);

    private static string Short(string hash) => hash.Length > 12 ? hash[..12] : hash;
}
