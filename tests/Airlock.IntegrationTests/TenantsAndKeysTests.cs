using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Airlock.Core.Api;
using Airlock.Core.Storage;
using Airlock.Envd.Client;
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
    private static readonly NewSandboxRequest LowRisk = new() { TemplateId = "base", Risk = "low", Timeout = 120 };

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
        await using (var connection = new SqliteConnection($"Data Source={Path.Combine(Host.DataDir, "airlock.db")};Pooling=False"))
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

    [Fact(Timeout = 120_000)]
    public async Task A_tenant_key_sees_only_its_tenants_sandboxes_and_its_creates_are_audited_with_its_key_id()
    {
        var tenant = await CreateTenantAsync("acme");
        var (secret, key) = await CreateKeyAsync(Host.Http, tenant.TenantId, "acme-ci", "tenant");
        using var acme = Host.NewClient(secret);

        var theirs = await Host.CreateSandboxAsync(LowRisk);
        var ours = await CreateSandboxAsync(acme);
        try
        {
            var listed = (await acme.GetFromJsonAsync("/v2/sandboxes", ApiJsonContext.Default.ListSandboxDetail))!;
            Assert.Equal([ours.SandboxId], listed.Select(s => s.SandboxId));
            using (var other = await acme.GetAsync($"/sandboxes/{theirs.SandboxId}"))
            {
                Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
            }

            using (var kill = await acme.DeleteAsync($"/sandboxes/{theirs.SandboxId}"))
            {
                Assert.Equal(HttpStatusCode.NotFound, kill.StatusCode);
            }

            var adminList = (await Host.Http.GetFromJsonAsync("/v2/sandboxes", ApiJsonContext.Default.ListSandboxDetail))!;
            Assert.DoesNotContain(ours.SandboxId, adminList.Select(s => s.SandboxId));

            var audit = await acme.GetStringAsync("/audit");
            var create = audit.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!)
                .Single(r => (string?)r["kind"] == "sandbox.create" && (string?)r["sandboxId"] == ours.SandboxId);
            var data = JsonNode.Parse((string)create["data"]!)!;
            Assert.Equal(key.KeyId, (string?)data["actor"]!["keyId"]);
            Assert.Equal("tenant", (string?)data["actor"]!["scope"]);
            Assert.DoesNotContain(secret, audit);
        }
        finally
        {
            await KillAsync(acme, ours.SandboxId);
            await KillAsync(Host.Http, theirs.SandboxId);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_timeout_that_fires_after_the_request_is_airlockds_own_doing_and_names_no_key()
    {
        var sandbox = await Host.CreateSandboxAsync(LowRisk with { Timeout = 1 });
        var deadline = DateTimeOffset.UtcNow.AddSeconds(30);
        JsonNode[] records = [];
        while (DateTimeOffset.UtcNow < deadline)
        {
            records = (await Host.Http.GetStringAsync("/audit")).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!)
                .Where(r => (string?)r["sandboxId"] == sandbox.SandboxId).ToArray();
            if (records.Any(r => (string?)r["kind"] == "sandbox.timeout"))
            {
                break;
            }

            await Task.Delay(200);
        }

        JsonNode Data(string kind) => JsonNode.Parse((string)records.Single(r => (string?)r["kind"] == kind)["data"]!)!;
        Assert.NotNull(Data("sandbox.create")["actor"]);
        Assert.Null(Data("sandbox.timeout")["actor"]);
    }

    [Fact(Timeout = 120_000)]
    public async Task A_read_only_key_reads_but_gets_403_on_create_kill_and_envd_writes_and_never_sees_an_access_token()
    {
        var (secret, _) = await CreateKeyAsync(Host.Http, null, "dashboard", "read-only");
        using var reader = Host.NewClient(secret);
        var sandbox = await Host.CreateSandboxAsync(LowRisk);
        try
        {
            using (var create = await reader.PostAsJsonAsync("/sandboxes", LowRisk, ApiJsonContext.Default.NewSandboxRequest))
            {
                Assert.Equal(HttpStatusCode.Forbidden, create.StatusCode);
            }

            using (var kill = await reader.DeleteAsync($"/sandboxes/{sandbox.SandboxId}"))
            {
                Assert.Equal(HttpStatusCode.Forbidden, kill.StatusCode);
            }

            using (var timeout = await reader.PostAsync($"/sandboxes/{sandbox.SandboxId}/timeout", Json("""{"timeout":30}""")))
            {
                Assert.Equal(HttpStatusCode.Forbidden, timeout.StatusCode);
            }

            using (var keys = await reader.GetAsync("/keys"))
            {
                Assert.Equal(HttpStatusCode.Forbidden, keys.StatusCode);
            }

            var detail = (await reader.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail))!;
            Assert.Equal("running", detail.State);
            Assert.Null(detail.EnvdAccessToken);
            using (var logs = await reader.GetAsync($"/sandboxes/{sandbox.SandboxId}/logs"))
            {
                Assert.Equal(HttpStatusCode.OK, logs.StatusCode);
            }

            // With the sandbox's token obtained elsewhere, the read-only key still narrows envd to reads.
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
            http.DefaultRequestHeaders.Add("X-API-Key", secret);
            var envd = Host.Envd(sandbox, http);
            Assert.NotEmpty(await envd.ListDirAsync("/home/user", 1, CancellationToken.None));
            var denied = await Assert.ThrowsAsync<EnvdException>(() => envd.MakeDirAsync("/home/user/written", CancellationToken.None));
            Assert.Equal(403, denied.HttpStatus);
            await Assert.ThrowsAsync<EnvdException>(() => envd.WriteFileAsync("/home/user/written.txt", new MemoryStream("x"u8.ToArray()), CancellationToken.None));
            var (exit, stdout, _) = await Host.RunAsync(sandbox, "ls /home/user");
            Assert.Equal(0, exit);
            Assert.DoesNotContain("written", stdout);
        }
        finally
        {
            await KillAsync(Host.Http, sandbox.SandboxId);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_revoked_key_gets_401_on_its_next_request_and_is_listed_as_revoked()
    {
        var (secret, key) = await CreateKeyAsync(Host.Http, null, "short-lived", "tenant");
        using var client = Host.NewClient(secret);
        using (var before = await client.GetAsync("/v2/sandboxes"))
        {
            Assert.Equal(HttpStatusCode.OK, before.StatusCode);
        }

        using (var revoke = await Host.Http.DeleteAsync($"/keys/{key.KeyId}"))
        {
            Assert.Equal(HttpStatusCode.NoContent, revoke.StatusCode);
        }

        using (var after = await client.GetAsync("/v2/sandboxes"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, after.StatusCode);
        }

        var listed = (await Host.Http.GetFromJsonAsync("/keys", AdminJsonContext.Default.ListApiKeyInfo))!.Single(k => k.KeyId == key.KeyId);
        Assert.NotNull(listed.RevokedAt);
        Assert.NotNull(listed.LastUsedAt);
    }

    [Fact(Timeout = 60_000)]
    public async Task An_expired_key_gets_401()
    {
        var (secret, key) = await CreateKeyAsync(Host.Http, null, "one-second", "tenant", ttl: 1);
        Assert.NotNull(key.ExpiresAt);
        using var client = Host.NewClient(secret);
        var deadline = DateTimeOffset.UtcNow.AddSeconds(10);
        while (DateTimeOffset.UtcNow < key.ExpiresAt!.Value.AddMilliseconds(200))
        {
            await Task.Delay(100);
        }

        using var after = await client.GetAsync("/v2/sandboxes");
        Assert.Equal(HttpStatusCode.Unauthorized, after.StatusCode);
        Assert.True(DateTimeOffset.UtcNow < deadline);
    }

    [Fact(Timeout = 60_000)]
    public async Task Rotating_a_key_keeps_its_id_and_scope_and_the_old_secret_gets_401_at_once()
    {
        var (old, key) = await CreateKeyAsync(Host.Http, null, "rotated", "read-only");
        using var response = await Host.Http.PostAsync($"/keys/{key.KeyId}/rotate", null);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var rotated = (await response.Content.ReadFromJsonAsync(AdminJsonContext.Default.ApiKeyIssued))!;
        Assert.Equal(key.KeyId, rotated.ApiKey.KeyId);
        Assert.Equal("read-only", rotated.ApiKey.Scope);
        Assert.NotEqual(old, rotated.Key);
        Assert.StartsWith("e2b_", rotated.Key);

        using var oldClient = Host.NewClient(old);
        using (var denied = await oldClient.GetAsync("/v2/sandboxes"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, denied.StatusCode);
        }

        using var newClient = Host.NewClient(rotated.Key);
        using var ok = await newClient.GetAsync("/v2/sandboxes");
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_tenant_key_gets_403_on_tenants_and_on_other_tenants_keys_and_cannot_mint_a_stronger_key()
    {
        var tenant = await CreateTenantAsync("limited");
        var (secret, _) = await CreateKeyAsync(Host.Http, tenant.TenantId, "limited-ci", "tenant");
        using var client = Host.NewClient(secret);
        var admin = (await Host.Http.GetFromJsonAsync("/keys", AdminJsonContext.Default.ListApiKeyInfo))!.First(k => k.Scope == "admin");

        async Task Expect(HttpStatusCode status, HttpRequestMessage request)
        {
            using (request)
            using (var response = await client.SendAsync(request))
            {
                Assert.True(status == response.StatusCode, $"{request.Method} {request.RequestUri}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
            }
        }

        await Expect(HttpStatusCode.Forbidden, new(HttpMethod.Get, "/tenants"));
        await Expect(HttpStatusCode.Forbidden, new(HttpMethod.Post, "/tenants") { Content = Json("""{"name":"mine"}""") });
        await Expect(HttpStatusCode.Forbidden, new(HttpMethod.Get, $"/tenants/{admin.TenantId}"));
        await Expect(HttpStatusCode.Forbidden, new(HttpMethod.Delete, $"/tenants/{admin.TenantId}"));
        await Expect(HttpStatusCode.OK, new(HttpMethod.Get, $"/tenants/{tenant.TenantId}"));
        await Expect(HttpStatusCode.Forbidden, new(HttpMethod.Patch, $"/tenants/{tenant.TenantId}") { Content = Json("""{"quotas":{"maxSandboxes":99}}""") });
        await Expect(HttpStatusCode.Forbidden, new(HttpMethod.Get, $"/keys?tenantId={admin.TenantId}"));
        await Expect(HttpStatusCode.Forbidden, new(HttpMethod.Post, "/keys") { Content = Json($$"""{"name":"x","tenantID":"{{admin.TenantId}}"}""") });
        await Expect(HttpStatusCode.Forbidden, new(HttpMethod.Post, "/keys") { Content = Json("""{"name":"x","scope":"admin"}""") });
        await Expect(HttpStatusCode.NotFound, new(HttpMethod.Delete, $"/keys/{admin.KeyId}"));
        await Expect(HttpStatusCode.NotFound, new(HttpMethod.Post, $"/keys/{admin.KeyId}/rotate"));
        await Expect(HttpStatusCode.Created, new(HttpMethod.Post, "/keys") { Content = Json("""{"name":"reader","scope":"read-only"}""") });

        var own = (await client.GetFromJsonAsync("/keys", AdminJsonContext.Default.ListApiKeyInfo))!;
        Assert.All(own, k => Assert.Equal(tenant.TenantId, k.TenantId));
        Assert.Equal(["limited-ci", "reader"], own.Select(k => k.Name));

        using var stillAdmin = await Host.Http.GetAsync("/tenants");
        Assert.Equal(HttpStatusCode.OK, stillAdmin.StatusCode);
    }

    [Fact(Timeout = 120_000)]
    public async Task A_tenants_own_quota_of_one_sandbox_refuses_the_second_with_429_until_raised()
    {
        var tenant = await CreateTenantAsync("tiny", """{"maxSandboxes":1}""");
        Assert.Equal(1, tenant.EffectiveQuotas.MaxSandboxes);
        Assert.Null(tenant.Quotas.MaxMemoryMB);
        var (secret, _) = await CreateKeyAsync(Host.Http, tenant.TenantId, "tiny", "tenant");
        using var client = Host.NewClient(secret);
        var first = await CreateSandboxAsync(client);
        string? third = null;
        try
        {
            using (var second = await client.PostAsJsonAsync("/sandboxes", LowRisk, ApiJsonContext.Default.NewSandboxRequest))
            {
                Assert.Equal(HttpStatusCode.TooManyRequests, second.StatusCode);
                Assert.Equal("quota_exceeded", (await second.Content.ReadFromJsonAsync(ApiJsonContext.Default.ApiError))!.ErrorCode);
            }

            using (var raise = await Host.Http.PatchAsync($"/tenants/{tenant.TenantId}", Json("""{"quotas":{"maxSandboxes":2}}""")))
            {
                Assert.Equal(HttpStatusCode.OK, raise.StatusCode);
                Assert.Equal(2, (await raise.Content.ReadFromJsonAsync(AdminJsonContext.Default.TenantInfo))!.EffectiveQuotas.MaxSandboxes);
            }

            third = (await CreateSandboxAsync(client)).SandboxId;

            using var busy = await Host.Http.DeleteAsync($"/tenants/{tenant.TenantId}");
            Assert.Equal(HttpStatusCode.Conflict, busy.StatusCode);
        }
        finally
        {
            await KillAsync(client, first.SandboxId);
            if (third is not null)
            {
                await KillAsync(client, third);
            }
        }

        using (var deleted = await Host.Http.DeleteAsync($"/tenants/{tenant.TenantId}"))
        {
            Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        }

        using (var gone = await client.GetAsync("/v2/sandboxes"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, gone.StatusCode);
        }

        using var missing = await Host.Http.GetAsync($"/tenants/{tenant.TenantId}");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
    }

    [Fact(Timeout = 60_000)]
    public async Task Malformed_bodies_are_400_and_unknown_ids_are_404()
    {
        var tenant = await CreateTenantAsync("shapes");
        foreach (var (path, body) in new[]
        {
            ("/tenants", "{"),
            ("/tenants", """{"name":""}"""),
            ("/tenants", """{"name":"x","quotas":{"maxSandboxes":-1}}"""),
            ("/tenants", """{"name":"x","quotas":{"maxSandboxes":"one"}}"""),
            ("/keys", "[]"),
            ("/keys", """{"name":"x","scope":"root"}"""),
            ("/keys", """{"name":"x","ttl":0}"""),
            ("/keys", """{"name":"x","ttl":60,"expiresAt":"2099-01-01T00:00:00Z"}"""),
            ("/keys", """{"name":"x","expiresAt":"2001-01-01T00:00:00Z"}"""),
            ("/keys", """{"name":"line\nbreak"}"""),
        })
        {
            using var response = await Host.Http.PostAsync(path, Json(body));
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{path} {body}: {(int)response.StatusCode}");
        }

        using (var noQuotas = await Host.Http.PatchAsync($"/tenants/{tenant.TenantId}", Json("{}")))
        {
            Assert.Equal(HttpStatusCode.BadRequest, noQuotas.StatusCode);
        }

        foreach (var (method, path, body) in new[]
        {
            ("GET", "/tenants/t_0000000000000000", null),
            ("PATCH", "/tenants/t_0000000000000000", """{"quotas":{}}"""),
            ("DELETE", "/tenants/t_0000000000000000", null),
            ("DELETE", "/keys/0000000000000000", null),
            ("POST", "/keys/0000000000000000/rotate", null),
            ("POST", "/keys", """{"name":"x","tenantID":"t_0000000000000000"}"""),
        })
        {
            using var request = new HttpRequestMessage(new HttpMethod(method), path) { Content = body is null ? null : Json(body) };
            using var response = await Host.Http.SendAsync(request);
            Assert.True(response.StatusCode == HttpStatusCode.NotFound, $"{method} {path}: {(int)response.StatusCode}");
        }
    }

    [Fact(Timeout = 30_000)]
    public async Task The_bootstrap_key_is_an_admin_key_that_cannot_delete_its_own_tenant()
    {
        var keys = (await Host.Http.GetFromJsonAsync("/keys", AdminJsonContext.Default.ListApiKeyInfo))!;
        var bootstrap = keys.Single(k => k.Name == "bootstrap");
        Assert.Equal("admin", bootstrap.Scope);
        using var response = await Host.Http.DeleteAsync($"/tenants/{bootstrap.TenantId}");
        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private async Task<TenantInfo> CreateTenantAsync(string name, string? quotas = null)
    {
        using var response = await Host.Http.PostAsync("/tenants", Json($$"""{"name":"{{name}}"{{(quotas is null ? "" : ",\"quotas\":" + quotas)}}}"""));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        return (await response.Content.ReadFromJsonAsync(AdminJsonContext.Default.TenantInfo))!;
    }

    private static async Task<(string Secret, ApiKeyInfo Key)> CreateKeyAsync(HttpClient client, string? tenantId, string name, string scope, long? ttl = null)
    {
        var request = new NewApiKeyRequest { TenantId = tenantId, Name = name, Scope = scope, Ttl = ttl };
        using var response = await client.PostAsJsonAsync("/keys", request, AdminJsonContext.Default.NewApiKeyRequest);
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        var issued = (await response.Content.ReadFromJsonAsync(AdminJsonContext.Default.ApiKeyIssued))!;
        Assert.Equal(scope, issued.ApiKey.Scope);
        return (issued.Key, issued.ApiKey);
    }

    private static async Task<SandboxCreated> CreateSandboxAsync(HttpClient client)
    {
        using var response = await client.PostAsJsonAsync("/sandboxes", LowRisk, ApiJsonContext.Default.NewSandboxRequest);
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        return (await response.Content.ReadFromJsonAsync(ApiJsonContext.Default.SandboxCreated))!;
    }

    private static async Task KillAsync(HttpClient client, string sandboxId)
    {
        using var response = await client.DeleteAsync($"/sandboxes/{sandboxId}");
        Assert.True(response.StatusCode is HttpStatusCode.NoContent or HttpStatusCode.NotFound, $"kill {sandboxId}: {(int)response.StatusCode}");
    }
}
