using System.Collections.Concurrent;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes.Agent;

/// <summary>
/// The one HTTP path from airlockd into sandboxes. Every sandbox's agent has the same address (10.254.0.2), so the
/// request URI names the sandbox instead (<c>http://&lt;id&gt;.sandbox.airlock:&lt;port&gt;</c>): connection pooling is
/// then per sandbox, and the connect callback opens a socket bound to that sandbox's host-side link.
/// </summary>
public sealed class SandboxConnector : IDisposable
{
    public const string HostSuffix = ".sandbox.airlock";
    private readonly ConcurrentDictionary<string, SandboxNetwork> _networks = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, ConcurrentDictionary<System.Net.Sockets.Socket, byte>> _sockets = new(StringComparer.Ordinal);
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

    /// <summary>
    /// Forgets the sandbox's link and closes every connection made over it, so the pool never hands out a connection to
    /// a link that is gone (a paused and resumed sandbox gets a new one; a reused idle connection would hang).
    /// </summary>
    public void Unregister(string sandboxId)
    {
        _networks.TryRemove(sandboxId, out _);
        if (_sockets.TryRemove(sandboxId, out var open))
        {
            foreach (var socket in open.Keys)
            {
                try
                {
                    socket.Shutdown(System.Net.Sockets.SocketShutdown.Both);
                }
                catch (Exception e) when (e is System.Net.Sockets.SocketException or ObjectDisposedException)
                {
                    // already closed
                }
            }
        }
    }

    public HttpClient CreateClient(TimeSpan timeout) => new(Handler, disposeHandler: false) { Timeout = timeout };

    /// <summary>
    /// A client with a connection of its own, closed when the client is disposed: a health check must prove that the
    /// agent answers a new connection now, not reuse one the pool kept (or leave one behind to an agent that is gone).
    /// </summary>
    public HttpClient CreateUnpooledClient(TimeSpan timeout) => new(
        new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            UseCookies = false,
            ConnectTimeout = timeout,
            ConnectCallback = ConnectAsync,
        },
        disposeHandler: true) { Timeout = timeout };

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
        var open = _sockets.GetOrAdd(id, _ => new ConcurrentDictionary<System.Net.Sockets.Socket, byte>());
        open[socket] = 0;
        return new TrackedStream(socket, open);
    }

    /// <summary>A socket stream that leaves its sandbox's set of open connections when disposed.</summary>
    private sealed class TrackedStream(System.Net.Sockets.Socket socket, ConcurrentDictionary<System.Net.Sockets.Socket, byte> open)
        : System.Net.Sockets.NetworkStream(socket, ownsSocket: true)
    {
        protected override void Dispose(bool disposing)
        {
            open.TryRemove(Socket, out _);
            base.Dispose(disposing);
        }
    }

    public void Dispose()
    {
        Invoker.Dispose();
        Handler.Dispose();
    }
}
