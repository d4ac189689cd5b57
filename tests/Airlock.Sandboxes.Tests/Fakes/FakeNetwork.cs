using System.Collections.Concurrent;
using System.Net.Sockets;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes.Tests.Fakes;

/// <summary>Networks as records only; connections to any sandbox's agent go to the one <see cref="FakeAgent"/> on loopback.</summary>
internal sealed class FakeNetwork(FakeAgent agent) : INetworkManager
{
    private int _index;
    private int _creates;
    private int _deletes;

    public int Creates => Volatile.Read(ref _creates);

    public int Deletes => Volatile.Read(ref _deletes);

    /// <summary>Namespaces that exist now, by name.</summary>
    public ConcurrentDictionary<string, SandboxNetwork> Live { get; } = new(StringComparer.Ordinal);

    /// <summary>What <see cref="FindLeftoversAsync"/> reports (ids whose namespace the host has).</summary>
    public ConcurrentBag<string> Leftovers { get; } = [];

    public ConcurrentBag<string> LeftoversDeleted { get; } = [];

    /// <summary>When set, every connect fails (an agent that never answers).</summary>
    public Exception? ConnectFails { get; set; }

    public Task<SandboxNetwork> CreateAsync(string sandboxId, NetworkPolicy policy, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _creates);
        var index = Interlocked.Increment(ref _index);
        var network = new SandboxNetwork
        {
            Namespace = $"airlock-{sandboxId}",
            HostInterface = $"al{index}",
            HostAddress = "10.254.0.1",
            SandboxAddress = "10.254.0.2",
            Index = index,
        };
        Live[network.Namespace] = network;
        return Task.FromResult(network);
    }

    public Task ApplyPolicyAsync(SandboxNetwork network, NetworkPolicy policy, CancellationToken cancellationToken) => Task.CompletedTask;

    public Task<string> AttachGuestAsync(SandboxNetwork network, uint tapOwner, CancellationToken cancellationToken) => Task.FromResult("tap0");

    public Task DeleteAsync(SandboxNetwork network, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _deletes);
        Live.TryRemove(network.Namespace, out _);
        return Task.CompletedTask;
    }

    public Task<IReadOnlyCollection<string>> FindLeftoversAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyCollection<string>>([.. Leftovers]);

    public Task DeleteLeftoverAsync(string sandboxId, CancellationToken cancellationToken)
    {
        LeftoversDeleted.Add(sandboxId);
        return Task.CompletedTask;
    }

    public async Task<Socket> ConnectAsync(SandboxNetwork network, int port, CancellationToken cancellationToken)
    {
        if (ConnectFails is { } failure)
        {
            throw failure;
        }

        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(agent.EndPoint, cancellationToken);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}
