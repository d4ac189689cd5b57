using System.Text;
using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;
using Airlock.Core.Storage;
using Airlock.Storage;
using Microsoft.Data.Sqlite;

namespace Airlock.Audit.Tests;

public sealed class AuditChainTests : IAsyncLifetime
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("airlock-audit-");
    private SqliteStore _store = null!;

    public async Task InitializeAsync()
    {
        _store = await SqliteStore.OpenAsync(_dir.FullName, TimeProvider.System, CancellationToken.None);
        await _store.MigrateAsync(CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        await _store.DisposeAsync();
        _dir.Delete(recursive: true);
    }

    private static AuditEntry Entry(int i) =>
        new(AuditKinds.ProcessStart, "t_1", "sb" + i, $$"""{"command":"/bin/bash","args":["-c","echo marker-{{i:D4}}"]}""");

    private async Task<AuditVerifyResult> VerifyAsync(IStore? store = null) =>
        await AuditVerifier.VerifyAsync((store ?? _store).ReadAuditAsync(0, null, CancellationToken.None), CancellationToken.None);

    private async Task AppendAsync(int count)
    {
        var chain = new AuditChain(_store, TimeProvider.System);
        await Task.WhenAll(Enumerable.Range(1, count).Select(i => chain.AppendAsync(Entry(i), CancellationToken.None)));
    }

    [Fact(Timeout = 60_000)]
    public async Task Concurrent_appends_form_one_unbroken_chain_with_continuous_sequence()
    {
        await AppendAsync(100);
        var records = await _store.ReadAuditAsync(0, null, CancellationToken.None).ToListAsync();
        Assert.Equal(Enumerable.Range(1, 100).Select(i => (long)i), records.Select(r => r.Seq));
        Assert.Equal(AuditHash.Genesis, records[0].PrevHash);
        for (var i = 1; i < records.Count; i++)
        {
            Assert.Equal(records[i - 1].Hash, records[i].PrevHash);
        }

        var result = await VerifyAsync();
        Assert.True(result.Ok, result.Reason);
        Assert.Equal(100, result.Count);
    }

    [Fact(Timeout = 60_000)]
    public async Task Flipping_one_byte_in_the_database_file_is_caught_and_the_record_named()
    {
        var chain = new AuditChain(_store, TimeProvider.System);
        for (var i = 1; i <= 20; i++)
        {
            await chain.AppendAsync(Entry(i), CancellationToken.None);
        }

        await _store.DisposeAsync();
        await CheckpointAndCloseAsync();

        // Find the payload of record 7 in the raw file and flip one byte of it.
        var path = Path.Combine(_dir.FullName, SqliteStore.FileName);
        var bytes = await File.ReadAllBytesAsync(path);
        var needle = Encoding.UTF8.GetBytes("marker-");
        var target = Encoding.UTF8.GetBytes(Entry(7).DataJson);
        // SQLite may keep a stale copy of a page in free space; flip the byte in every copy so the live row changes.
        var flipped = 0;
        for (var at = bytes.AsSpan().IndexOf(target); at >= 0; at = NextIndex(bytes, target, at + 1))
        {
            bytes[at + target.AsSpan().IndexOf(needle) + needle.Length + 3] = (byte)'9'; // "0007" -> "0009"
            flipped++;
        }

        Assert.True(flipped > 0, "record 7's payload not found in the database file");
        await File.WriteAllBytesAsync(path, bytes);

        await using var reopened = await SqliteStore.OpenReadOnlyAsync(_dir.FullName, CancellationToken.None);
        var result = await VerifyAsync(reopened);
        Assert.False(result.Ok);
        Assert.Equal(7, result.FirstBrokenSeq);
        Assert.Contains("record 7", result.Reason, StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task The_store_refuses_to_update_or_delete_audit_rows()
    {
        await AppendAsync(3);
        await using var connection = new SqliteConnection($"Data Source={Path.Combine(_dir.FullName, SqliteStore.FileName)};Pooling=False");
        await connection.OpenAsync();
        foreach (var sql in new[] { "UPDATE audit SET data = '{}' WHERE seq = 2", "DELETE FROM audit WHERE seq = 2" })
        {
            await using var command = connection.CreateCommand();
            command.CommandText = sql;
            var error = await Assert.ThrowsAsync<SqliteException>(() => command.ExecuteNonQueryAsync());
            Assert.Contains("append-only", error.Message, StringComparison.Ordinal);
        }

        Assert.True((await VerifyAsync()).Ok);
    }

    [Theory(Timeout = 60_000)]
    [InlineData("UPDATE audit SET data = '{\"command\":\"innocent\"}' WHERE seq = 5", 5L, "content was changed")]
    [InlineData("DELETE FROM audit WHERE seq = 5", 6L, "missing")]
    [InlineData("UPDATE audit SET kind = 'file.write' WHERE seq = 9", 9L, "content was changed")]
    public async Task An_attacker_who_drops_the_triggers_is_still_caught(string tamper, long brokenAt, string reason)
    {
        await AppendAsync(10);
        await using (var connection = new SqliteConnection($"Data Source={Path.Combine(_dir.FullName, SqliteStore.FileName)};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; " + tamper;
            await command.ExecuteNonQueryAsync();
        }

        var result = await VerifyAsync();
        Assert.False(result.Ok);
        Assert.Equal(brokenAt, result.FirstBrokenSeq);
        Assert.Contains(reason, result.Reason, StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task Recomputing_every_hash_after_an_edit_still_breaks_the_link_to_the_untouched_tail()
    {
        await AppendAsync(6);
        var records = await _store.ReadAuditAsync(0, null, CancellationToken.None).ToListAsync();
        var forged = records[2] with { Data = "{\"forged\":true}" };
        forged = forged with { Hash = AuditHash.Compute(forged.Seq, forged.Time, forged.Kind, forged.TenantId, forged.SandboxId, forged.Data, forged.PrevHash) };
        var tampered = records.Take(2).Append(forged).Concat(records.Skip(3)).ToAsyncEnumerable();
        var result = await AuditVerifier.VerifyAsync(tampered, CancellationToken.None);
        Assert.False(result.Ok);
        Assert.Equal(4, result.FirstBrokenSeq);
    }

    [Fact(Timeout = 60_000)]
    public async Task Sandboxes_round_trip_and_are_scoped_by_tenant()
    {
        var a = await _store.CreateTenantAsync("a", CancellationToken.None);
        var b = await _store.CreateTenantAsync("b", CancellationToken.None);
        var now = DateTimeOffset.UtcNow;
        var record = new SandboxRecord
        {
            SandboxId = "abcdefghij0123456789",
            TenantId = a.TenantId,
            TemplateId = "base",
            Boundary = BoundaryKind.Process,
            State = SandboxState.Running,
            CreatedAt = now,
            EndAt = now.AddMinutes(5),
            AccessTokenHash = "h",
            Metadata = new Dictionary<string, string> { ["owner"] = "me" },
            EnvVars = new Dictionary<string, string> { ["A"] = "1" },
            Network = new SandboxNetwork { Namespace = "airlock-x", HostInterface = "alkx", HostAddress = "10.213.0.1", SandboxAddress = "10.254.0.2", Index = 1 },
        };
        await _store.InsertSandboxAsync(record, CancellationToken.None);
        var got = await _store.GetSandboxAsync(a.TenantId, record.SandboxId, CancellationToken.None);
        Assert.NotNull(got);
        Assert.Equal("me", got.Metadata["owner"]);
        Assert.Equal("1", got.EnvVars["A"]);
        Assert.Equal(record.Network, got.Network);
        Assert.Equal(record.EndAt, got.EndAt);
        Assert.Null(await _store.GetSandboxAsync(b.TenantId, record.SandboxId, CancellationToken.None));
        Assert.Empty(await _store.ListSandboxesAsync(b.TenantId, null, CancellationToken.None));
        Assert.Single(await _store.ListSandboxesAsync(a.TenantId, [SandboxState.Running], CancellationToken.None));
        Assert.Empty(await _store.ListSandboxesAsync(a.TenantId, [SandboxState.Killed], CancellationToken.None));
        await _store.UpdateSandboxAsync(got with { State = SandboxState.Killed }, CancellationToken.None);
        Assert.Equal(SandboxState.Killed, (await _store.GetSandboxAnyTenantAsync(record.SandboxId, CancellationToken.None))!.State);
        await Assert.ThrowsAsync<KeyNotFoundException>(() => _store.UpdateSandboxAsync(got with { TenantId = b.TenantId }, CancellationToken.None));
    }

    [Fact(Timeout = 60_000)]
    public async Task Migrations_are_idempotent()
    {
        await _store.MigrateAsync(CancellationToken.None);
        await _store.MigrateAsync(CancellationToken.None);
        await AppendAsync(1);
        Assert.True((await VerifyAsync()).Ok);
    }

    private static int NextIndex(byte[] bytes, byte[] target, int from)
    {
        var i = bytes.AsSpan(from).IndexOf(target);
        return i < 0 ? -1 : from + i;
    }

    private async Task CheckpointAndCloseAsync()
    {
        await using (var connection = new SqliteConnection($"Data Source={Path.Combine(_dir.FullName, SqliteStore.FileName)};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = "PRAGMA wal_checkpoint(TRUNCATE);";
            await command.ExecuteNonQueryAsync();
        }

        SqliteConnection.ClearAllPools();
    }
}
