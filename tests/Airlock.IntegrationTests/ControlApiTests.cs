using System.Net;
using System.Net.Http.Json;
using System.Text;
using Airlock.Core.Api;
using Airlock.Core.Storage;
using Airlock.Server.Auth;
using Airlock.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Airlock.IntegrationTests;

[Collection("airlockd")]
[Trait("Category", "Integration")]
public sealed class ControlApiTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    private AirlockHost Host => fixture.Host;

    private static async Task<ApiError> ErrorOf(HttpResponseMessage response) =>
        (await response.Content.ReadFromJsonAsync(ApiJsonContext.Default.ApiError))!;

    [Fact(Timeout = 180_000)]
    public async Task A_low_risk_sandbox_gets_the_process_boundary_and_runs_commands_as_user_on_bookworm()
    {
        var sandbox = await Host.CreateSandboxAsync();
        Assert.Equal("process", sandbox.Boundary.Boundary);
        Assert.Equal("bubblewrap", sandbox.Boundary.Driver);
        Assert.StartsWith("airlock-process-v1 sha256:", sandbox.Boundary.Seccomp);
        Assert.Equal(File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), sandbox.Boundary.Kernel);
        Assert.Null(sandbox.Boundary.Downgrade);
        Assert.False(string.IsNullOrEmpty(sandbox.EnvdAccessToken));

        var (exit, stdout, _) = await Host.RunAsync(sandbox, "uname -r; id; cat /etc/os-release");
        Assert.Equal(0, exit);
        Assert.Contains("uid=1000(user) gid=1000(user)", stdout);
        Assert.Contains("bookworm", stdout);
        Assert.StartsWith(sandbox.Boundary.Kernel, stdout);

        var (failedExit, _, stderr) = await Host.RunAsync(sandbox, "echo nope >&2; exit 7");
        Assert.Equal(7, failedExit);
        Assert.Equal("nope\n", stderr);

        using var detail = await Host.Http.GetAsync($"/sandboxes/{sandbox.SandboxId}");
        var got = (await detail.Content.ReadFromJsonAsync(ApiJsonContext.Default.SandboxDetail))!;
        Assert.Equal("running", got.State);
        Assert.Equal("process", got.Boundary!.Boundary);

        using var killed = await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
        Assert.Equal(HttpStatusCode.NoContent, killed.StatusCode);
        Assert.Empty(Leftovers.Find([sandbox.SandboxId], Host.DataDir));
    }

    [Fact(Timeout = 60_000)]
    public async Task An_unknown_template_is_a_404_naming_the_known_ones()
    {
        using var response = await Host.Http.PostAsJsonAsync("/sandboxes", new NewSandboxRequest { TemplateId = "no-such-template", Risk = "low" }, ApiJsonContext.Default.NewSandboxRequest);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        var error = await ErrorOf(response);
        Assert.Equal(404, error.Code);
        Assert.Equal("template_not_found", error.ErrorCode);
        Assert.Contains("base", error.Message);
    }

    [Theory(Timeout = 60_000)]
    [InlineData("{\"templateID\": \"base\", ", "application/json", HttpStatusCode.BadRequest, "invalid_json")]
    [InlineData("[1,2,3]", "application/json", HttpStatusCode.BadRequest, "invalid_json")]
    [InlineData("{\"timeout\": \"soon\"}", "application/json", HttpStatusCode.BadRequest, "invalid_json")]
    [InlineData("", "application/json", HttpStatusCode.BadRequest, "invalid_json")]
    [InlineData("templateID=base", "application/x-www-form-urlencoded", HttpStatusCode.UnsupportedMediaType, "unsupported_media_type")]
    [InlineData("{\"templateID\": \"base\", \"risk\": \"extreme\"}", "application/json", HttpStatusCode.BadRequest, "invalid_risk")]
    [InlineData("{\"templateID\": \"base\", \"risk\": \"low\", \"timeout\": -5}", "application/json", HttpStatusCode.BadRequest, "invalid_timeout")]
    [InlineData("{\"templateID\": \"base\", \"risk\": \"low\", \"envVars\": {\"AIRLOCK_ACCESS_TOKEN\": \"x\"}}", "application/json", HttpStatusCode.BadRequest, "invalid_env")]
    public async Task Malformed_requests_get_a_clear_4xx(string body, string contentType, HttpStatusCode status, string code)
    {
        using var content = new StringContent(body, Encoding.UTF8, contentType);
        using var response = await Host.Http.PostAsync("/sandboxes", content);
        Assert.Equal(status, response.StatusCode);
        Assert.Equal(code, (await ErrorOf(response)).ErrorCode);
    }

    [Theory(Timeout = 60_000)]
    [InlineData("/v2/sandboxes?nextToken=forged-token", "invalid_next_token")]
    [InlineData("/v2/sandboxes?nextToken=MTIzOi4uLy4uL2V0Yw", "invalid_next_token")] // "123:../../etc"
    [InlineData("/v2/sandboxes?order=sideways", "invalid_order")]
    [InlineData("/v2/sandboxes?limit=0", "invalid_limit")]
    [InlineData("/v2/sandboxes?state=zombie", "invalid_state")]
    [InlineData("/v2/sandboxes?metadata=novalue", "invalid_metadata_filter")]
    [InlineData("/sandboxes/aaaaaaaaaaaaaaaaaaaa/metrics?start=yesterday", "invalid_start")]
    [InlineData("/sandboxes/aaaaaaaaaaaaaaaaaaaa/logs?limit=5000", "invalid_limit")]
    public async Task Malformed_list_metrics_and_logs_queries_get_a_clear_400(string path, string code)
    {
        using var response = await Host.Http.GetAsync(path);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(code, (await ErrorOf(response)).ErrorCode);
    }

    [Fact(Timeout = 60_000)]
    public async Task An_oversized_json_body_is_a_413()
    {
        var big = "{\"templateID\":\"base\",\"metadata\":{\"k\":\"" + new string('x', 2 << 20) + "\"}}";
        using var content = new StringContent(big, Encoding.UTF8, "application/json");
        using var response = await Host.Http.PostAsync("/sandboxes", content);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal("body_too_large", (await ErrorOf(response)).ErrorCode);
    }

    [Theory(Timeout = 60_000)]
    [InlineData(null)]
    [InlineData("e2b_0000000000000000000000000000000000000000")]
    [InlineData("not a key")]
    public async Task A_missing_or_wrong_api_key_is_a_401(string? key)
    {
        using var client = Host.NewClient(key);
        using var response = await client.GetAsync("/v2/sandboxes");
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("unauthorized", (await ErrorOf(response)).ErrorCode);
    }

    [Fact(Timeout = 180_000)]
    public async Task Another_tenants_sandbox_is_invisible_and_untouchable()
    {
        var store = Host.Services.GetRequiredService<IStore>();
        var tenant = await store.CreateTenantAsync("other", CancellationToken.None);
        var otherKey = ApiKeys.NewApiKey();
        await store.AddApiKeyAsync(new ApiKeyRecord(ApiKeys.NewId(), tenant.TenantId, ApiKeys.Hash(otherKey), "test", DateTimeOffset.UtcNow), CancellationToken.None);

        var mine = await Host.CreateSandboxAsync();
        using var other = Host.NewClient(otherKey);
        using (var get = await other.GetAsync($"/sandboxes/{mine.SandboxId}"))
        {
            Assert.Equal(HttpStatusCode.NotFound, get.StatusCode);
        }

        using (var delete = await other.DeleteAsync($"/sandboxes/{mine.SandboxId}"))
        {
            Assert.Equal(HttpStatusCode.NotFound, delete.StatusCode);
        }

        using (var timeout = await other.PostAsJsonAsync($"/sandboxes/{mine.SandboxId}/timeout", new TimeoutRequest { Timeout = 5 }, ApiJsonContext.Default.TimeoutRequest))
        {
            Assert.Equal(HttpStatusCode.NotFound, timeout.StatusCode);
        }

        var list = await other.GetFromJsonAsync("/v2/sandboxes", ApiJsonContext.Default.ListSandboxDetail);
        Assert.DoesNotContain(list!, s => s.SandboxId == mine.SandboxId);

        var (exit, stdout, _) = await Host.RunAsync(mine, "echo still-mine");
        Assert.Equal((0, "still-mine\n"), (exit, stdout));
        await Host.Http.DeleteAsync($"/sandboxes/{mine.SandboxId}");
    }

    [Fact(Timeout = 180_000)]
    public async Task A_killed_sandbox_id_is_a_clear_404_for_every_control_action_and_502_on_envd_as_E2Bs_edge_answers()
    {
        var sandbox = await Host.CreateSandboxAsync();
        using (var kill = await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}"))
        {
            Assert.Equal(HttpStatusCode.NoContent, kill.StatusCode);
        }

        using (var again = await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}"))
        {
            Assert.Equal(HttpStatusCode.NotFound, again.StatusCode);
            Assert.Contains("killed", (await ErrorOf(again)).Message);
        }

        using (var timeout = await Host.Http.PostAsJsonAsync($"/sandboxes/{sandbox.SandboxId}/timeout", new TimeoutRequest { Timeout = 60 }, ApiJsonContext.Default.TimeoutRequest))
        {
            Assert.Equal(HttpStatusCode.NotFound, timeout.StatusCode);
        }

        // E2B's SDKs take 502 on envd routes as "not running" (isRunning() false); anything else throws.
        var envd = await Assert.ThrowsAnyAsync<Exception>(() => Host.RunAsync(sandbox, "true"));
        Assert.Contains("502", envd.ToString() + (envd as Airlock.Envd.Client.EnvdException)?.HttpStatus);
        using (var gone = await Host.Http.GetAsync($"/sandboxes/{sandbox.SandboxId}/metrics"))
        {
            Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
        }

        // Its log (E2B's shape) outlives it: its own lifecycle records, oldest first, and no other sandbox's.
        var other = await Host.CreateSandboxAsync();
        var logs = await Host.Http.GetFromJsonAsync($"/v2/sandboxes/{sandbox.SandboxId}/logs", ApiJsonContext.Default.SandboxLogs);
        Assert.StartsWith("sandbox.create", logs!.Logs[0].Line, StringComparison.Ordinal);
        Assert.Contains(logs.LogEntries, e => e.Message.StartsWith("sandbox.kill", StringComparison.Ordinal) && e.Level == "info");
        Assert.Single(logs.Logs, l => l.Line.StartsWith("sandbox.create", StringComparison.Ordinal)); // not the other's too
        await Host.Http.DeleteAsync($"/sandboxes/{other.SandboxId}");

        var detail = await Host.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail);
        Assert.Equal("killed", detail!.State);
        Assert.Null(detail.EnvdAccessToken);
    }

    [Theory(Timeout = 60_000)]
    [InlineData("{\"templateID\":\"base\",\"risk\":\"medium\"}", "container")]
    [InlineData("{\"templateID\":\"base\",\"boundary\":\"container\"}", "container")]
    public async Task A_boundary_this_host_cannot_offer_fails_clearly_and_never_downgrades_silently(string body, string boundary)
    {
        await using var host = await StartWithoutContainersAsync();
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await host.Http.PostAsync("/sandboxes", content);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.StatusCode);
        var error = await ErrorOf(response);
        Assert.Equal("boundary_unavailable", error.ErrorCode);
        Assert.Contains(boundary, error.Message);
        Assert.Contains("Missing", error.Message);
    }

    /// <summary>A second airlockd whose operator turned the container boundary off (its data dir goes with it).</summary>
    private static async Task<AirlockHost> StartWithoutContainersAsync()
    {
        var host = await AirlockHost.StartAsync(o => o with { DisabledBoundaries = new HashSet<Airlock.Core.Sandboxes.BoundaryKind> { Airlock.Core.Sandboxes.BoundaryKind.Container } });
        host.DeleteDataDirOnDispose = true;
        return host;
    }

    [Fact(Timeout = 60_000)]
    public async Task Asking_for_a_boundary_weaker_than_the_risk_without_consent_is_refused()
    {
        using var response = await Host.Http.PostAsJsonAsync("/sandboxes", new NewSandboxRequest { TemplateId = "base", Risk = "high", Boundary = "process" }, ApiJsonContext.Default.NewSandboxRequest);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("boundary_too_weak", (await ErrorOf(response)).ErrorCode);
    }

    [Fact(Timeout = 180_000)]
    public async Task A_consented_downgrade_is_reported_in_the_sandbox_and_the_audit()
    {
        // With the container boundary off on this node, risk medium with consent gets process, and says so.
        await using var host = await StartWithoutContainersAsync();
        var sandbox = await host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Risk = "medium", AllowDowngrade = true, Timeout = 60 });
        Assert.Equal("process", sandbox.Boundary.Boundary);
        Assert.Contains("container unavailable", sandbox.Boundary.Downgrade);
        var audit = await AuditTests.ReadAuditAsync(host);
        Assert.Contains(audit, r => r.SandboxId == sandbox.SandboxId && r.Kind == "sandbox.create" && r.Data.Contains("container unavailable", StringComparison.Ordinal));
        await host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
    }

    [Fact(Timeout = 180_000)]
    public async Task Listing_filters_by_state_and_metadata()
    {
        var tagged = await Host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Risk = "low", Timeout = 60, Metadata = new() { ["team"] = "blue", ["run"] = "42" } });
        var list = await Host.Http.GetFromJsonAsync("/v2/sandboxes?state=running&metadata=" + Uri.EscapeDataString("team=blue&run=42"), ApiJsonContext.Default.ListSandboxDetail);
        Assert.Equal(tagged.SandboxId, Assert.Single(list!).SandboxId);
        var none = await Host.Http.GetFromJsonAsync("/v2/sandboxes?metadata=" + Uri.EscapeDataString("team=red"), ApiJsonContext.Default.ListSandboxDetail);
        Assert.Empty(none!);
        using var bad = await Host.Http.GetAsync("/v2/sandboxes?state=sleepy");
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        await Host.Http.DeleteAsync($"/sandboxes/{tagged.SandboxId}");
        var killed = await Host.Http.GetFromJsonAsync("/v2/sandboxes?state=killed&metadata=" + Uri.EscapeDataString("team=blue"), ApiJsonContext.Default.ListSandboxDetail);
        Assert.Contains(killed!, s => s.SandboxId == tagged.SandboxId);
    }

    [Fact(Timeout = 120_000)]
    public async Task A_command_that_never_ends_is_killed_at_the_timeout_and_the_audit_says_so()
    {
        var sandbox = await Host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Risk = "low", Timeout = 60 });
        using (var set = await Host.Http.PostAsJsonAsync($"/sandboxes/{sandbox.SandboxId}/timeout", new TimeoutRequest { Timeout = 3 }, ApiJsonContext.Default.TimeoutRequest))
        {
            Assert.Equal(HttpStatusCode.NoContent, set.StatusCode);
        }

        var run = Host.RunAsync(sandbox, "sleep 1000");
        var deadline = DateTime.UtcNow.AddSeconds(30);
        string state = "running";
        while (DateTime.UtcNow < deadline && state == "running")
        {
            await Task.Delay(250);
            state = (await Host.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail))!.State;
        }

        Assert.Equal("killed", state);
        await Assert.ThrowsAnyAsync<Exception>(() => run.WaitAsync(TimeSpan.FromSeconds(30)));
        var audit = await AuditTests.ReadAuditAsync(Host);
        Assert.Contains(audit, r => r.SandboxId == sandbox.SandboxId && r.Kind == "sandbox.timeout");
        Assert.Contains(audit, r => r.SandboxId == sandbox.SandboxId && r.Kind == "process.start" && r.Data.Contains("sleep 1000", StringComparison.Ordinal));
        Assert.Empty(Leftovers.Find([sandbox.SandboxId], Host.DataDir));
    }

    [Fact(Timeout = 30_000)]
    public async Task The_served_openapi_document_matches_the_checked_in_copy()
    {
        using var anonymous = Host.NewClient(null);
        var served = await anonymous.GetStringAsync("/openapi/v1.json");
        var path = Path.Combine(Repo.Root, "docs", "openapi.json");
        if (Environment.GetEnvironmentVariable("AIRLOCK_UPDATE_OPENAPI") == "1")
        {
            await File.WriteAllTextAsync(path, served);
        }

        Assert.True(File.Exists(path), "docs/openapi.json is missing; run the tests once with AIRLOCK_UPDATE_OPENAPI=1");
        Assert.Equal(Normalize(await File.ReadAllTextAsync(path)), Normalize(served));
        Assert.Contains("/sandboxes/{sandboxID}/timeout", served);

        static string Normalize(string json) => System.Text.Json.Nodes.JsonNode.Parse(json)!.ToJsonString();
    }
}
