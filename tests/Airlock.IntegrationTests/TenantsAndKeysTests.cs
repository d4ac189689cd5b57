using System.Net;
using Airlock.Core.Storage;
using Airlock.Server.Auth;
using Airlock.Testing;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;

namespace Airlock.IntegrationTests;

/// <summary>Tenants, API keys and scopes through the control API of a real airlockd.</summary>
[Collection("airlockd")]
[Trait("Category", "Integration")]
public sealed class TenantsAndKeysTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    private AirlockHost Host => fixture.Host;

    [Fact(Timeout = 30_000)]
    public async Task A_key_whose_row_is_gone_stops_working_on_the_next_request()
    {
        var store = Host.Services.GetRequiredService<IStore>();
        var tenant = (await store.ListTenantsAsync(CancellationToken.None))[0];
        var secret = ApiKeys.NewApiKey();
        var keyId = ApiKeys.NewId();
        await store.AddApiKeyAsync(new ApiKeyRecord(keyId, tenant.TenantId, ApiKeys.Hash(secret), "doomed", DateTimeOffset.UtcNow), CancellationToken.None);
        using var client = Host.NewClient(secret);
        using (var before = await client.GetAsync("/v2/sandboxes"))
        {
            Assert.Equal(HttpStatusCode.OK, before.StatusCode);
        }

        // Another node (or an operator with sqlite3) deletes the row: no cache may keep the key alive.
        await using (var connection = new SqliteConnection($"Data Source={Path.Combine(Host.DataDir, "airlock.db")}"))
        {
            await connection.OpenAsync();
            await using var delete = connection.CreateCommand();
            delete.CommandText = "DELETE FROM api_keys WHERE key_id = $id";
            delete.Parameters.AddWithValue("$id", keyId);
            Assert.Equal(1, await delete.ExecuteNonQueryAsync());
        }

        using var after = await client.GetAsync("/v2/sandboxes");
        Assert.Equal(HttpStatusCode.Unauthorized, after.StatusCode);
    }
}
