using System.Net;
using System.Text.Json.Nodes;

namespace Airlock.Sdk.Tests;

public sealed class AirlockClientTests
{
    private static AirlockClient Client(StubServer stub, string? key = "e2b_test", TimeSpan? timeout = null) =>
        new(new AirlockClientOptions { BaseUrl = stub.BaseUrl, ApiKey = key, Timeout = timeout ?? TimeSpan.FromSeconds(20) });

    [Fact(Timeout = 30_000)]
    public async Task Create_posts_the_E2B_shaped_body_with_the_api_key_and_returns_the_boundary_it_got()
    {
        await using var stub = new StubServer(_ => (201, Canned.Created));
        using var client = Client(stub);

        var sandbox = await client.CreateSandboxAsync(new SandboxCreateOptions
        {
            Risk = "low",
            Boundary = "process",
            AllowDowngrade = true,
            TimeoutSeconds = 60,
            Metadata = new Dictionary<string, string> { ["team"] = "blue" },
            EnvVars = new Dictionary<string, string> { ["A"] = "1" },
        });
        sandbox.Detach();

        var request = Assert.Single(stub.Requests);
        Assert.Equal("POST", request.Method);
        Assert.Equal("/sandboxes", request.PathAndQuery);
        Assert.Equal("e2b_test", request.Headers["X-API-Key"]);
        var body = JsonNode.Parse(request.Body)!;
        Assert.Equal("base", body["templateID"]!.GetValue<string>());
        Assert.Equal("low", body["risk"]!.GetValue<string>());
        Assert.Equal("process", body["boundary"]!.GetValue<string>());
        Assert.True(body["allowDowngrade"]!.GetValue<bool>());
        Assert.Equal(60, body["timeout"]!.GetValue<int>());
        Assert.Equal("blue", body["metadata"]!["team"]!.GetValue<string>());
        Assert.Equal("1", body["envVars"]!["A"]!.GetValue<string>());

        Assert.Equal(Canned.Id, sandbox.Id);
        Assert.Equal("base", sandbox.TemplateId);
        Assert.Equal("bubblewrap", sandbox.Boundary!.Driver);
        Assert.Equal(512, sandbox.Boundary.Limits.MemoryMiB);
    }

    [Fact(Timeout = 30_000)]
    public async Task Create_with_no_options_sends_only_the_template_so_the_server_defaults_apply()
    {
        await using var stub = new StubServer(_ => (201, Canned.Created));
        using var client = Client(stub);

        (await client.CreateSandboxAsync()).Detach();

        var body = JsonNode.Parse(Assert.Single(stub.Requests).Body)!.AsObject();
        Assert.Equal(["templateID"], body.Select(p => p.Key));
    }

    [Fact(Timeout = 30_000)]
    public async Task Pause_resume_and_usage_call_the_documented_routes()
    {
        await using var stub = new StubServer(r => r.PathAndQuery switch
        {
            "/sandboxes/abcdefghij0123456789/pause" => (204, null),
            "/sandboxes/abcdefghij0123456789/connect" => (201, """{"sandboxID":"abcdefghij0123456789","templateID":"base","envdVersion":"0.5.7","envdAccessToken":"t","boundary":{"boundary":"microvm","driver":"qemu","kernel":"6.1","limits":{},"network":"n"}}"""),
            "/usage" => (200, """{"tenantID":"t1","at":"2026-11-25T00:00:00Z","total":{"runningSeconds":3},"sandboxes":[]}"""),
            _ => (404, Canned.Error(404, "not_found", "no")),
        });
        using var client = Client(stub);

        await client.PauseAsync("abcdefghij0123456789");
        Assert.True(await client.ResumeAsync("abcdefghij0123456789", 60));
        var usage = await client.UsageAsync();
        Assert.Equal(3, usage.Total.RunningSeconds);
        Assert.Equal(["POST /sandboxes/abcdefghij0123456789/pause", "POST /sandboxes/abcdefghij0123456789/connect", "GET /usage"], stub.Requests.Select(r => $"{r.Method} {r.PathAndQuery}"));
        Assert.Equal(60, JsonNode.Parse(stub.Requests.ElementAt(1).Body)!["timeout"]!.GetValue<int>());
        var missing = await Assert.ThrowsAsync<AirlockApiException>(() => client.PauseAsync("zzzzzzzzzzzzzzzzzzzz"));
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
    }

    [Fact(Timeout = 30_000)]
    public async Task A_refusal_becomes_an_AirlockApiException_with_status_code_and_message()
    {
        await using var stub = new StubServer(_ => (422, Canned.Error(422, "boundary_unavailable", "microvm is not available on this host: /dev/kvm missing")));
        using var client = Client(stub);

        var e = await Assert.ThrowsAsync<AirlockApiException>(() => client.CreateSandboxAsync(new SandboxCreateOptions { Risk = "high" }));

        Assert.Equal((HttpStatusCode)422, e.StatusCode);
        Assert.Equal("boundary_unavailable", e.Code);
        Assert.Equal("microvm is not available on this host: /dev/kvm missing", e.Message);
    }

    [Fact(Timeout = 30_000)]
    public async Task An_error_that_is_not_airlock_JSON_still_says_the_status_and_the_body()
    {
        await using var stub = new StubServer(_ => (502, "upstream broke"));
        using var client = Client(stub);

        var e = await Assert.ThrowsAsync<AirlockApiException>(() => client.GetAsync(Canned.Id));

        Assert.Equal(HttpStatusCode.BadGateway, e.StatusCode);
        Assert.Equal("http_502", e.Code);
        Assert.Contains("502", e.Message, StringComparison.Ordinal);
        Assert.Contains("upstream broke", e.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 30_000)]
    public async Task List_sends_state_and_the_url_encoded_metadata_filter_E2B_uses()
    {
        await using var stub = new StubServer(_ => (200, "[" + Canned.Detail + "]"));
        using var client = Client(stub);

        var list = await client.ListAsync(new SandboxListFilter
        {
            State = "running",
            Metadata = new Dictionary<string, string> { ["team"] = "blue", ["run"] = "4&2" },
        });

        Assert.Equal("/v2/sandboxes?state=running&metadata=team%3Dblue%26run%3D4%25262", Assert.Single(stub.Requests).PathAndQuery);
        var detail = Assert.Single(list);
        Assert.Equal(Canned.Id, detail.SandboxId);
        Assert.Equal("running", detail.State);
        Assert.Equal("blue", detail.Metadata!["team"]);
    }

    [Fact]
    public void The_metadata_filter_encodes_keys_and_values_before_encoding_the_whole()
    {
        var path = AirlockClient.BuildListPath(new SandboxListFilter { Metadata = new Dictionary<string, string> { ["team"] = "blue", ["run"] = "4&2" } });

        // team=blue&run=4%262, then encoded once more as one query value.
        Assert.Equal("v2/sandboxes?metadata=team%3Dblue%26run%3D4%25262", path);
        Assert.Equal("v2/sandboxes", AirlockClient.BuildListPath(null));
        Assert.Equal("v2/sandboxes?state=running%2Cpaused", AirlockClient.BuildListPath(new SandboxListFilter { State = "running,paused" }));
    }

    [Fact(Timeout = 30_000)]
    public async Task Disposing_a_sandbox_kills_it_unless_it_was_detached()
    {
        await using var stub = new StubServer(r => r.Method == "POST" ? (201, Canned.Created) : (204, null));
        using var client = Client(stub);

        await using (await client.CreateSandboxAsync())
        {
        }

        var detached = await client.CreateSandboxAsync();
        detached.Detach();
        await detached.DisposeAsync();

        var deletes = stub.Requests.Where(r => r.Method == "DELETE").ToList();
        var delete = Assert.Single(deletes);
        Assert.Equal("/sandboxes/" + Canned.Id, delete.PathAndQuery);
        Assert.Equal("e2b_test", delete.Headers["X-API-Key"]);
    }

    [Fact(Timeout = 30_000)]
    public async Task Disposing_a_sandbox_that_is_already_gone_is_not_an_error_but_killing_it_is()
    {
        await using var stub = new StubServer(r => r.Method == "POST" ? (201, Canned.Created) : (404, Canned.Error(404, "sandbox_not_found", "Sandbox not found")));
        using var client = Client(stub);

        var sandbox = await client.CreateSandboxAsync();
        var e = await Assert.ThrowsAsync<AirlockApiException>(() => sandbox.KillAsync());
        Assert.Equal(HttpStatusCode.NotFound, e.StatusCode);
        await sandbox.DisposeAsync();
    }

    [Fact(Timeout = 30_000)]
    public async Task Set_timeout_posts_the_seconds()
    {
        await using var stub = new StubServer(r => r.Method == "POST" && r.PathAndQuery == "/sandboxes" ? (201, Canned.Created) : (204, null));
        using var client = Client(stub);
        var sandbox = await client.CreateSandboxAsync();
        sandbox.Detach();

        await sandbox.SetTimeoutAsync(90);

        var request = stub.Requests.Last();
        Assert.Equal("/sandboxes/" + Canned.Id + "/timeout", request.PathAndQuery);
        Assert.Equal(90, JsonNode.Parse(request.Body)!["timeout"]!.GetValue<int>());
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => sandbox.SetTimeoutAsync(0));
    }

    [Fact(Timeout = 30_000)]
    public async Task Connect_uses_the_access_token_from_the_sandbox_details()
    {
        await using var stub = new StubServer(_ => (200, Canned.Detail));
        using var client = Client(stub);

        var sandbox = await client.ConnectAsync(Canned.Id);
        sandbox.Detach();

        Assert.Equal("GET", Assert.Single(stub.Requests).Method);
        Assert.Equal(Canned.Id, sandbox.Id);
        Assert.Equal("process", sandbox.Boundary!.Boundary);
    }

    [Fact(Timeout = 30_000)]
    public async Task Connecting_to_a_sandbox_without_a_token_says_why()
    {
        await using var stub = new StubServer(_ => (200, Canned.Detail.Replace("\"envdAccessToken\":\"tok-123\",", "", StringComparison.Ordinal).Replace("running", "killed", StringComparison.Ordinal)));
        using var client = Client(stub);

        var e = await Assert.ThrowsAsync<AirlockApiException>(() => client.ConnectAsync(Canned.Id));

        Assert.Contains("killed", e.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 30_000)]
    public async Task A_server_that_does_not_answer_gives_a_timeout_error_not_a_hang()
    {
        await using var stub = new StubServer(_ => (200, "[]")) { Delay = TimeSpan.FromSeconds(10) };
        using var client = Client(stub, timeout: TimeSpan.FromMilliseconds(300));

        var e = await Assert.ThrowsAsync<AirlockApiException>(() => client.ListAsync());

        Assert.Equal("timeout", e.Code);
    }

    [Fact(Timeout = 30_000)]
    public async Task An_unreachable_server_is_named_in_the_error()
    {
        using var client = new AirlockClient(new AirlockClientOptions { BaseUrl = new Uri("http://127.0.0.1:1/") });

        var e = await Assert.ThrowsAsync<AirlockApiException>(() => client.ListAsync());

        Assert.Equal("unreachable", e.Code);
        Assert.Contains("127.0.0.1:1", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Bad_create_options_are_refused_before_any_request()
    {
        Assert.Throws<ArgumentException>(() => AirlockClient.BuildCreateRequest(new SandboxCreateOptions { Template = " " }));
        Assert.Throws<ArgumentException>(() => AirlockClient.BuildCreateRequest(new SandboxCreateOptions { TimeoutSeconds = 0 }));
    }
}
