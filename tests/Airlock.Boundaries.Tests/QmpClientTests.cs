using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Airlock.Boundaries.MicroVm;

namespace Airlock.Boundaries.Tests;

/// <summary>The QMP client against a scripted peer on a Unix socket: greeting, capabilities, ids, events, errors, hang-up.</summary>
public sealed class QmpClientTests : IAsyncDisposable
{
    private readonly string _path = Path.Combine(Path.GetTempPath(), $"qmp-test-{Guid.NewGuid():N}.sock");
    private readonly Socket _listener = new(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);

    public QmpClientTests()
    {
        _listener.Bind(new UnixDomainSocketEndPoint(_path));
        _listener.Listen(1);
    }

    [Fact(Timeout = 20_000)]
    public async Task Replies_are_matched_by_id_across_interleaved_events_and_errors_become_QmpException()
    {
        var peer = Task.Run(async () =>
        {
            using var conn = await _listener.AcceptAsync();
            await using var stream = new NetworkStream(conn);
            using var reader = new StreamReader(stream);
            await Write(stream, """{"QMP": {"version": {}, "capabilities": []}}""");
            var caps = JsonDocument.Parse((await reader.ReadLineAsync())!).RootElement;
            Assert.Equal("qmp_capabilities", caps.GetProperty("execute").GetString());
            await Write(stream, $$"""{"return": {}, "id": {{caps.GetProperty("id").GetInt64()}}}""");

            var status = JsonDocument.Parse((await reader.ReadLineAsync())!).RootElement;
            var bad = JsonDocument.Parse((await reader.ReadLineAsync())!).RootElement;
            // An event first, then the replies in the opposite order, the second split across two writes.
            await Write(stream, """{"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}""");
            await Write(stream, $$"""{"error": {"class": "GenericError", "desc": "no such thing"}, "id": {{bad.GetProperty("id").GetInt64()}}}""");
            var reply = Encoding.UTF8.GetBytes($$"""{"return": {"status": "paused", "running": false}, "id": {{status.GetProperty("id").GetInt64()}}}""" + "\n");
            await stream.WriteAsync(reply.AsMemory(0, 10));
            await Task.Delay(50);
            await stream.WriteAsync(reply.AsMemory(10));
            await reader.ReadLineAsync(); // the last command: answered by hanging up
        });

        await using var qmp = await QmpClient.ConnectAsync(_path, TimeSpan.FromSeconds(5), CancellationToken.None);
        var statusTask = qmp.ExecuteAsync("query-status", null, CancellationToken.None);
        var badTask = qmp.ExecuteAsync("does-not-exist", w => w.WriteString("x", "y"), CancellationToken.None);
        Assert.Equal("paused", (await statusTask).GetProperty("status").GetString());
        var error = await Assert.ThrowsAsync<QmpException>(() => badTask);
        Assert.Equal("GenericError", error.ErrorClass);
        Assert.Contains("no such thing", error.Message, StringComparison.Ordinal);
        Assert.Equal("STOP", (await qmp.WaitForEventAsync("STOP", CancellationToken.None)).Name);

        var last = qmp.ExecuteAsync("quit", null, CancellationToken.None);
        await peer;
        await Assert.ThrowsAsync<IOException>(() => last);
    }

    [Fact(Timeout = 20_000)]
    public async Task A_socket_that_never_appears_is_a_clear_timeout()
    {
        var missing = _path + ".missing";
        var e = await Assert.ThrowsAsync<TimeoutException>(() => QmpClient.ConnectAsync(missing, TimeSpan.FromMilliseconds(300), CancellationToken.None));
        Assert.Contains(missing, e.Message, StringComparison.Ordinal);
    }

    private static Task Write(Stream stream, string line) => stream.WriteAsync(Encoding.UTF8.GetBytes(line + "\n")).AsTask();

    public ValueTask DisposeAsync()
    {
        _listener.Dispose();
        File.Delete(_path);
        return ValueTask.CompletedTask;
    }
}
