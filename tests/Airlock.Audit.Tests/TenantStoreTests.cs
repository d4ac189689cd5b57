using System.Globalization;
using Airlock.Core.Storage;
using Airlock.Storage;
using Microsoft.Data.Sqlite;

namespace Airlock.Audit.Tests;

/// <summary>Tenants and API keys in the SQLite store, including the move from schema v3 (one bootstrap key, no scopes).</summary>
public sealed class TenantStoreTests : IDisposable
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 2, 3, 4, 5, TimeSpan.Zero);
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("airlock-tenants-");

    public void Dispose() => _dir.Delete(recursive: true);

    [Fact(Timeout = 30_000)]
    public async Task A_v3_database_keeps_its_bootstrap_key_working_as_an_admin_key_of_its_tenant()
    {
        // A v3 database as airlockd wrote it: migrations 0001 to 0003 only, the default tenant and its bootstrap key.
        var path = Path.Combine(_dir.FullName, SqliteStore.FileName);
        await using (var connection = new SqliteConnection($"Data Source={path};Pooling=False"))
        {
            await connection.OpenAsync();
            await ExecuteAsync(connection, "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);");
            foreach (var (version, sql) in EmbeddedMigrations().Where(m => m.Version <= 3))
            {
                await ExecuteAsync(connection, sql);
                await ExecuteAsync(connection, $"INSERT INTO schema_version VALUES ({version.ToString(CultureInfo.InvariantCulture)}, '2026-01-01T00:00:00.0000000+00:00');");
            }

            await ExecuteAsync(connection, "INSERT INTO tenants VALUES ('t_default', 'default', '2026-01-01T00:00:00.0000000+00:00');");
            await ExecuteAsync(connection, "INSERT INTO api_keys VALUES ('k_boot', 't_default', 'hash-of-bootstrap', 'bootstrap', '2026-01-01T00:00:00.0000000+00:00');");
        }

        await using var store = await SqliteStore.OpenAsync(_dir.FullName, TimeProvider.System, CancellationToken.None);
        await store.MigrateAsync(CancellationToken.None);

        var key = await store.FindApiKeyByHashAsync("hash-of-bootstrap", CancellationToken.None);
        Assert.NotNull(key);
        Assert.Equal(("k_boot", "t_default", ApiKeyScope.Admin), (key.KeyId, key.TenantId, key.Scope));
        Assert.True(key.IsValidAt(DateTimeOffset.UtcNow));
        var tenant = Assert.Single(await store.ListTenantsAsync(CancellationToken.None));
        Assert.Equal(TenantQuotas.None, tenant.Quotas);
        Assert.Null(tenant.DeletedAt);

        // Keys made after the migration are not promoted: only the pre-v4 ones were.
        await store.AddApiKeyAsync(new ApiKeyRecord("k_new", "t_default", "hash-new", "ci", T0), CancellationToken.None);
        Assert.Equal(ApiKeyScope.Tenant, (await store.GetApiKeyAsync("k_new", CancellationToken.None))!.Scope);
    }

    [Fact(Timeout = 30_000)]
    public async Task Revoking_rotating_and_deleting_a_tenant_change_what_a_hash_finds()
    {
        await using var store = await SqliteStore.OpenAsync(_dir.FullName, TimeProvider.System, CancellationToken.None);
        await store.MigrateAsync(CancellationToken.None);
        var tenant = await store.CreateTenantAsync("acme", new TenantQuotas { MaxSandboxes = 1 }, CancellationToken.None);
        Assert.Equal(1, (await store.GetTenantAsync(tenant.TenantId, CancellationToken.None))!.Quotas.MaxSandboxes);
        await store.AddApiKeyAsync(new ApiKeyRecord("k1", tenant.TenantId, "h1", "one", T0) { Scope = ApiKeyScope.ReadOnly, ExpiresAt = T0.AddHours(1) }, CancellationToken.None);
        await store.AddApiKeyAsync(new ApiKeyRecord("k2", tenant.TenantId, "h2", "two", T0), CancellationToken.None);

        var one = (await store.FindApiKeyByHashAsync("h1", CancellationToken.None))!;
        Assert.Equal((ApiKeyScope.ReadOnly, T0.AddHours(1)), (one.Scope, one.ExpiresAt));
        Assert.True(one.IsValidAt(T0.AddMinutes(59)));
        Assert.False(one.IsValidAt(T0.AddHours(1)));

        Assert.True(await store.RotateApiKeyAsync("k1", "h1b", CancellationToken.None));
        Assert.Null(await store.FindApiKeyByHashAsync("h1", CancellationToken.None));
        Assert.Equal("k1", (await store.FindApiKeyByHashAsync("h1b", CancellationToken.None))!.KeyId);

        Assert.True(await store.RevokeApiKeyAsync("k1", T0, CancellationToken.None));
        Assert.False(await store.RevokeApiKeyAsync("k1", T0, CancellationToken.None));
        Assert.False(await store.RotateApiKeyAsync("k1", "h1c", CancellationToken.None));
        Assert.False((await store.FindApiKeyByHashAsync("h1b", CancellationToken.None))!.IsValidAt(T0));

        await store.TouchApiKeyAsync("k2", T0.AddMinutes(5), CancellationToken.None);
        Assert.Equal(T0.AddMinutes(5), (await store.GetApiKeyAsync("k2", CancellationToken.None))!.LastUsedAt);

        Assert.True(await store.SetTenantQuotasAsync(tenant.TenantId, new TenantQuotas { MaxVCpus = 4 }, CancellationToken.None));
        Assert.True(await store.DeleteTenantAsync(tenant.TenantId, T0, CancellationToken.None));
        Assert.False(await store.DeleteTenantAsync(tenant.TenantId, T0, CancellationToken.None));
        Assert.False(await store.SetTenantQuotasAsync(tenant.TenantId, TenantQuotas.None, CancellationToken.None));
        Assert.Equal(T0, (await store.GetTenantAsync(tenant.TenantId, CancellationToken.None))!.DeletedAt);
        Assert.All(await store.ListApiKeysAsync(tenant.TenantId, CancellationToken.None), k => Assert.NotNull(k.RevokedAt));
        Assert.False((await store.FindApiKeyByHashAsync("h2", CancellationToken.None))!.IsValidAt(T0));
    }

    private static async Task ExecuteAsync(SqliteConnection connection, string sql)
    {
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync();
    }

    private static IEnumerable<(int Version, string Sql)> EmbeddedMigrations()
    {
        var assembly = typeof(SqliteStore).Assembly;
        foreach (var name in assembly.GetManifestResourceNames().Where(n => n.EndsWith(".sql", StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            var file = name[(name.IndexOf(".Migrations.Sqlite.", StringComparison.Ordinal) + ".Migrations.Sqlite.".Length)..];
            using var reader = new StreamReader(assembly.GetManifestResourceStream(name)!);
            yield return (int.Parse(file.Split('_', 2)[0], CultureInfo.InvariantCulture), reader.ReadToEnd());
        }
    }
}
