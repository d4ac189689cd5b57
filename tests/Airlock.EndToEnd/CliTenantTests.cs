using System.Text.Json.Nodes;
using Airlock.Testing;
using CliWrap;
using CliWrap.Buffered;

namespace Airlock.EndToEnd;

/// <summary><c>airlock tenant</c> and <c>airlock key</c>, the published CLI against an in-process airlockd.</summary>
[Trait("Category", "Integration")]
public sealed class CliTenantTests : IAsyncLifetime
{
    private AirlockHost _host = null!;

    public async Task InitializeAsync() => _host = await AirlockHost.StartAsync();

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        _host.DeleteDataDir();
    }

    private async Task<BufferedCommandResult> Airlock(string apiKey, params string[] args)
    {
        var dll = Path.Combine(Repo.Root, "artifacts", "cli", "airlock.dll");
        Assert.True(File.Exists(dll), "publish the CLI first (scripts/build.sh)");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        return await Cli.Wrap("dotnet").WithArguments(["exec", dll, .. args])
            .WithEnvironmentVariables(new Dictionary<string, string?> { ["AIRLOCK_URL"] = _host.BaseUrl.ToString(), ["AIRLOCK_API_KEY"] = apiKey, ["AIRLOCK_DATA_DIR"] = _host.DataDir })
            .WithValidation(CommandResultValidation.None)
            .ExecuteBufferedAsync(cts.Token);
    }

    [Fact(Timeout = 120_000)]
    public async Task Tenant_create_then_key_create_prints_a_working_secret_once_and_key_revoke_ends_it()
    {
        var tenant = await Airlock(_host.ApiKey, "tenant", "create", "acme", "--max-sandboxes", "2", "--json");
        Assert.True(tenant.ExitCode == 0, tenant.StandardError);
        var tenantId = JsonNode.Parse(tenant.StandardOutput)!["tenantID"]!.GetValue<string>();
        Assert.Equal(2, JsonNode.Parse(tenant.StandardOutput)!["effectiveQuotas"]!["maxSandboxes"]!.GetValue<int>());

        var key = await Airlock(_host.ApiKey, "key", "create", "acme-ci", "--tenant", tenantId, "--scope", "tenant");
        Assert.True(key.ExitCode == 0, key.StandardError);
        var secret = key.StandardOutput.Trim();
        Assert.Matches("^e2b_[0-9a-f]{40}$", secret);

        // The new key works, sees its own tenant's keys only, and nothing lists a secret.
        var listed = await Airlock(secret, "key", "ls", "--json");
        Assert.True(listed.ExitCode == 0, listed.StandardError);
        var keys = JsonNode.Parse(listed.StandardOutput)!.AsArray();
        var keyId = Assert.Single(keys)!["keyID"]!.GetValue<string>();
        Assert.DoesNotContain(secret, listed.StandardOutput);
        var all = await Airlock(_host.ApiKey, "key", "ls");
        Assert.True(all.ExitCode == 0, all.StandardError);
        Assert.Contains(keyId, all.StandardOutput);
        Assert.Contains("bootstrap", all.StandardOutput);
        Assert.DoesNotContain(secret, all.StandardOutput);

        var tenants = await Airlock(_host.ApiKey, "tenant", "ls");
        Assert.Contains(tenantId, tenants.StandardOutput);
        var forbidden = await Airlock(secret, "tenant", "ls");
        Assert.Equal(1, forbidden.ExitCode);
        Assert.Contains("admin", forbidden.StandardError);

        var revoke = await Airlock(_host.ApiKey, "key", "revoke", keyId);
        Assert.True(revoke.ExitCode == 0, revoke.StandardError);
        var after = await Airlock(secret, "sandbox", "ls");
        Assert.Equal(1, after.ExitCode);
        Assert.Contains("revoked", after.StandardError);

        var removed = await Airlock(_host.ApiKey, "tenant", "rm", tenantId);
        Assert.True(removed.ExitCode == 0, removed.StandardError);
        Assert.DoesNotContain(tenantId, (await Airlock(_host.ApiKey, "tenant", "ls")).StandardOutput);
    }

    [Fact(Timeout = 120_000)]
    public async Task Key_rotate_prints_a_new_secret_and_the_old_one_stops_working()
    {
        var created = await Airlock(_host.ApiKey, "key", "create", "rotating", "--scope", "read-only", "--ttl", "3600", "--json");
        Assert.True(created.ExitCode == 0, created.StandardError);
        var json = JsonNode.Parse(created.StandardOutput)!;
        var (old, keyId) = (json["key"]!.GetValue<string>(), json["apiKey"]!["keyID"]!.GetValue<string>());
        Assert.NotNull(json["apiKey"]!["expiresAt"]);

        var rotated = await Airlock(_host.ApiKey, "key", "rotate", keyId);
        Assert.True(rotated.ExitCode == 0, rotated.StandardError);
        var secret = rotated.StandardOutput.Trim();
        Assert.NotEqual(old, secret);
        Assert.Equal(0, (await Airlock(secret, "sandbox", "ls")).ExitCode);
        Assert.Equal(1, (await Airlock(old, "sandbox", "ls")).ExitCode);
    }
}
