using Airlock.Testing;

namespace Airlock.IntegrationTests;

/// <summary>One airlockd for a test class; asserts on disposal that its sandboxes left nothing behind.</summary>
public sealed class HostFixture : IAsyncLifetime
{
    public AirlockHost Host { get; private set; } = null!;

    public async Task InitializeAsync() => Host = await AirlockHost.StartAsync();

    public async Task DisposeAsync()
    {
        await Host.DisposeAsync();
        var leftovers = Host.FindLeftovers();
        Host.DeleteDataDir();
        Assert.True(leftovers.Count == 0, "leftovers after airlockd stopped:\n" + string.Join("\n", leftovers));
    }
}

[CollectionDefinition("airlockd", DisableParallelization = true)]
public sealed class AirlockdCollection;
