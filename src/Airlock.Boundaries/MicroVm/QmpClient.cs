using System.Buffers;
using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text.Json;
using System.Threading.Channels;

namespace Airlock.Boundaries.MicroVm;

/// <summary>An error QEMU returned for a QMP command.</summary>
public sealed class QmpException(string command, string errorClass, string description)
    : Exception($"QMP {command} failed: {errorClass}: {description}")
{
    public string ErrorClass { get; } = errorClass;
}

/// <summary>An asynchronous QMP event (STOP, RESUME, SHUTDOWN, MIGRATION, …).</summary>
public sealed record QmpEvent(string Name, JsonElement Data);

/// <summary>
/// A QMP client over QEMU's Unix socket: capabilities negotiation, commands matched to replies by id, events on a channel.
/// </summary>
/// <remarks>
/// Written here because no maintained .NET QMP library exists; the protocol is newline-delimited JSON
/// (https://www.qemu.org/docs/master/interop/qmp-spec.html) and needs a few dozen lines.
/// </remarks>
public sealed class QmpClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<long, TaskCompletionSource<JsonElement>> _pending = new();
    private readonly Channel<QmpEvent> _events = Channel.CreateUnbounded<QmpEvent>();
    private readonly CancellationTokenSource _closing = new();
    private readonly Task _reader;
    private long _nextId;

    private QmpClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = Task.Run(ReadLoopAsync);
    }

    /// <summary>Events QEMU sent since the connection opened, in order.</summary>
    public ChannelReader<QmpEvent> Events => _events.Reader;

    /// <summary>Completes when the connection closes (QEMU exited or the socket broke).</summary>
    public Task Closed => _reader;

    /// <summary>Connects, waiting up to <paramref name="timeout"/> for the socket to appear, and negotiates capabilities.</summary>
    public static async Task<QmpClient> ConnectAsync(string socketPath, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            while (true)
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), deadline.Token);
                    var client = new QmpClient(socket);
                    await client.ExecuteAsync("qmp_capabilities", null, deadline.Token);
                    return client;
                }
                catch (SocketException)
                {
                    socket.Dispose(); // not there yet (QEMU still starting)
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }

                await Task.Delay(TimeSpan.FromMilliseconds(10), deadline.Token);
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"QMP socket {socketPath} did not answer within {timeout.TotalSeconds:0.#} s");
        }
    }

    /// <summary>Runs one command; returns its <c>return</c> value or throws <see cref="QmpException"/>.</summary>
    public async Task<JsonElement> ExecuteAsync(string command, Action<Utf8JsonWriter>? arguments, CancellationToken cancellationToken)
    {
        var id = Interlocked.Increment(ref _nextId);
        var reply = new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = reply;
        try
        {
            var buffer = new ArrayBufferWriter<byte>();
            using (var writer = new Utf8JsonWriter(buffer))
            {
                writer.WriteStartObject();
                writer.WriteString("execute", command);
                if (arguments is not null)
                {
                    writer.WritePropertyName("arguments");
                    writer.WriteStartObject();
                    arguments(writer);
                    writer.WriteEndObject();
                }

                writer.WriteNumber("id", id);
                writer.WriteEndObject();
            }

            await _writeLock.WaitAsync(cancellationToken);
            try
            {
                await _stream.WriteAsync(buffer.WrittenMemory, cancellationToken);
                await _stream.WriteAsync("\n"u8.ToArray(), cancellationToken);
            }
            finally
            {
                _writeLock.Release();
            }

            var result = await reply.Task.WaitAsync(cancellationToken);
            if (result.TryGetProperty("error", out var error))
            {
                throw new QmpException(command, error.GetProperty("class").GetString() ?? "", error.GetProperty("desc").GetString() ?? "");
            }

            return result.TryGetProperty("return", out var value) ? value : default;
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    /// <summary>Waits for the next event named <paramref name="name"/>, skipping others.</summary>
    public async Task<QmpEvent> WaitForEventAsync(string name, CancellationToken cancellationToken)
    {
        await foreach (var e in _events.Reader.ReadAllAsync(cancellationToken))
        {
            if (e.Name == name)
            {
                return e;
            }
        }

        throw new IOException($"QMP connection closed before event {name}");
    }

    private async Task ReadLoopAsync()
    {
        var pending = new MemoryStream();
        var buffer = new byte[16 * 1024];
        Exception? failure = null;
        try
        {
            while (true)
            {
                var read = await _stream.ReadAsync(buffer, _closing.Token);
                if (read == 0)
                {
                    break;
                }

                var start = 0;
                for (var i = 0; i < read; i++)
                {
                    if (buffer[i] != (byte)'\n')
                    {
                        continue;
                    }

                    pending.Write(buffer, start, i - start);
                    Dispatch(pending.ToArray());
                    pending.SetLength(0);
                    start = i + 1;
                }

                pending.Write(buffer, start, read - start);
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException or JsonException)
        {
            failure = e; // a peer that stops speaking JSON is treated as gone
        }
        finally
        {
            var closed = new IOException("the QMP connection closed (QEMU exited?)", failure);
            foreach (var waiter in _pending.Values)
            {
                waiter.TrySetException(closed);
            }

            _events.Writer.TryComplete();
        }
    }

    private void Dispatch(byte[] line)
    {
        if (line.Length == 0)
        {
            return;
        }

        using var document = JsonDocument.Parse(line);
        var root = document.RootElement.Clone();
        if (root.TryGetProperty("event", out var name))
        {
            _events.Writer.TryWrite(new QmpEvent(name.GetString() ?? "", root.TryGetProperty("data", out var data) ? data : default));
        }
        else if (root.TryGetProperty("id", out var id) && id.TryGetInt64(out var key) && _pending.TryGetValue(key, out var waiter))
        {
            waiter.TrySetResult(root);
        }

    }

    public async ValueTask DisposeAsync()
    {
        await _closing.CancelAsync();
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
            // already closed
        }

        await _stream.DisposeAsync();
        try
        {
            await _reader;
        }
        catch (Exception e) when (e is IOException or OperationCanceledException)
        {
            // closing
        }

        _closing.Dispose();
        _writeLock.Dispose();
    }
}
