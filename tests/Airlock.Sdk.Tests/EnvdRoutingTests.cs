namespace Airlock.Sdk.Tests;

/// <summary>Commands and files go through airlockd to the sandbox's agent: sandbox headers and the access token, never the API key.</summary>
public sealed class EnvdRoutingTests
{
    private static async Task<(StubServer Stub, Sandbox Sandbox, AirlockClient Client)> ConnectAsync()
    {
        var stub = new StubServer(r => r.PathAndQuery.StartsWith("/sandboxes/", StringComparison.Ordinal) && r.Method == "GET"
            ? (200, Canned.Detail)
            : (503, Canned.Error(503, "unavailable", "agent is not answering")));
        var client = new AirlockClient(new AirlockClientOptions { BaseUrl = stub.BaseUrl, ApiKey = "e2b_secret", Timeout = TimeSpan.FromSeconds(20) });
        var sandbox = await client.ConnectAsync(Canned.Id);
        sandbox.Detach();
        return (stub, sandbox, client);
    }

    private static void AssertRoutedToAgent(StubRequest request)
    {
        Assert.Equal(Canned.Id, request.Headers["E2b-Sandbox-Id"]);
        Assert.Equal("49983", request.Headers["E2b-Sandbox-Port"]);
        Assert.Equal("tok-123", request.Headers["X-Access-Token"]);
        Assert.False(request.Headers.ContainsKey("X-API-Key"), "the API key must not travel to the agent inside the sandbox");
    }

    [Fact(Timeout = 30_000)]
    public async Task File_reads_carry_the_sandbox_headers_and_token_and_a_failure_is_an_AirlockApiException()
    {
        var (stub, sandbox, client) = await ConnectAsync();
        await using (stub)
        using (client)
        {
            await Assert.ThrowsAsync<AirlockApiException>(() => sandbox.Files.ReadTextAsync("/etc/hostname"));

            AssertRoutedToAgent(stub.Requests.Last());
        }
    }

    [Fact(Timeout = 30_000)]
    public async Task File_writes_carry_the_sandbox_headers_and_token()
    {
        var (stub, sandbox, client) = await ConnectAsync();
        await using (stub)
        using (client)
        {
            await Assert.ThrowsAsync<AirlockApiException>(() => sandbox.Files.WriteAsync("/home/user/x.txt", "hello"));

            AssertRoutedToAgent(stub.Requests.Last());
        }
    }

    [Fact(Timeout = 30_000)]
    public async Task Commands_carry_the_sandbox_headers_and_token_and_a_refusal_is_an_AirlockApiException()
    {
        var (stub, sandbox, client) = await ConnectAsync();
        await using (stub)
        using (client)
        {
            await Assert.ThrowsAsync<AirlockApiException>(() => sandbox.ExecAsync("echo hi"));

            AssertRoutedToAgent(stub.Requests.Last());
        }
    }
}
