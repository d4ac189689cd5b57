using System.Collections.Concurrent;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Server.Sandboxes;

/// <summary>
/// The one HTTP path from airlockd into sandboxes. Every sandbox's agent has the same address (10.254.0.2), so the
/// request URI names the sandbox instead (<c>http://&lt;id&gt;.sandbox.airlock:&lt;port&gt;</c>): connection pooling is
/// then per sandbox, and the connect callback opens a socket bound to that sandbox's host-side link.
/// </summary>
internal sealed class SandboxConnector : IDisposable
{
    public const string HostSuffix = ".sandbox.airlock";
    private readonly ConcurrentDictionary<string, SandboxNetwork> _networks = new(StringComparer.Ordinal);
    private readonly INetworkManager _network;

    public SandboxConnector(INetworkManager network)
    {
        _network = network;
        Handler = new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = System.Net.DecompressionMethods.None,
            UseCookies = false,
            EnableMultipleHttp2Connections = true,
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
            ConnectTimeout = TimeSpan.FromSeconds(5),
            ConnectCallback = ConnectAsync,
        };
        Invoker = new HttpMessageInvoker(Handler, disposeHandler: false);
    }

    public SocketsHttpHandler Handler { get; }

    public HttpMessageInvoker Invoker { get; }

    public static Uri BaseUri(string sandboxId, int port) => new($"http://{sandboxId}{HostSuffix}:{port}/");

    public void Register(string sandboxId, SandboxNetwork network) => _networks[sandboxId] = network;

    public void Unregister(string sandboxId) => _networks.TryRemove(sandboxId, out _);

    public HttpClient CreateClient(TimeSpan timeout) => new(Handler, disposeHandler: false) { Timeout = timeout };

    private async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        var host = context.DnsEndPoint.Host;
        if (!host.EndsWith(HostSuffix, StringComparison.Ordinal))
        {
            throw new HttpRequestException($"'{host}' is not a sandbox address.");
        }

        var id = host[..^HostSuffix.Length];
        if (!_networks.TryGetValue(id, out var network))
        {
            throw new HttpRequestException($"Sandbox {id} has no network link (not running).");
        }

        var socket = await _network.ConnectAsync(network, context.DnsEndPoint.Port, cancellationToken);
        return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
    }

    public void Dispose()
    {
        Invoker.Dispose();
        Handler.Dispose();
    }
}
