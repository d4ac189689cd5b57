using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Airlock.Sandboxes.Tests.Fakes;

/// <summary>
/// Every sandbox's guest agent, as far as the lifecycle talks to it: a tiny HTTP/1.1 responder on 127.0.0.1 that answers
/// <c>GET /health</c> with 204 and <c>SetIdentity</c> with an empty protobuf (200). Keeps connections alive.
/// </summary>
internal sealed class FakeAgent : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentBag<Socket> _accepted = [];
    private readonly Task _accepting;

    public FakeAgent()
    {
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndpoint;

    /// <summary>Request lines seen ("GET /health", "POST /agent.Agent/SetIdentity").</summary>
    public ConcurrentQueue<string> Requests { get; } = new();

    private async Task AcceptAsync()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                var socket = await _listener.AcceptSocketAsync(_stop.Token);
                _accepted.Add(socket);
                _ = ServeAsync(socket);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // stopping
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        var pending = new List<byte>();
        var buffer = new byte[4096];
        try
        {
            while (true)
            {
                int end;
                while ((end = HeaderEnd(pending)) < 0)
                {
                    var read = await socket.ReceiveAsync(buffer, _stop.Token);
                    if (read == 0)
                    {
                        return;
                    }

                    pending.AddRange(buffer.AsSpan(0, read));
                }

                var head = Encoding.ASCII.GetString(pending.GetRange(0, end).ToArray());
                var lines = head.Split("\r\n");
                var length = lines.Skip(1)
                    .Select(l => l.Split(':', 2))
                    .Where(p => p.Length == 2 && p[0].Trim().Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
                    .Select(p => int.Parse(p[1].Trim(), System.Globalization.CultureInfo.InvariantCulture))
                    .FirstOrDefault();
                while (pending.Count < end + 4 + length)
                {
                    var read = await socket.ReceiveAsync(buffer, _stop.Token);
                    if (read == 0)
                    {
                        return;
                    }

                    pending.AddRange(buffer.AsSpan(0, read));
                }

                pending.RemoveRange(0, end + 4 + length);
                var requestLine = string.Join(' ', lines[0].Split(' ').Take(2));
                Requests.Enqueue(requestLine);
                var response = requestLine.EndsWith("/SetIdentity", StringComparison.Ordinal)
                    ? "HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: 0\r\n\r\n"
                    : "HTTP/1.1 204 No Content\r\n\r\n";
                await socket.SendAsync(Encoding.ASCII.GetBytes(response), _stop.Token);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // the client closed, or the test is over
        }
        finally
        {
            socket.Dispose();
        }
    }

    private static int HeaderEnd(List<byte> bytes)
    {
        for (var i = 0; i + 3 < bytes.Count; i++)
        {
            if (bytes[i] == '\r' && bytes[i + 1] == '\n' && bytes[i + 2] == '\r' && bytes[i + 3] == '\n')
            {
                return i;
            }
        }

        return -1;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        foreach (var socket in _accepted)
        {
            socket.Dispose();
        }

        _stop.Dispose();
    }
}
