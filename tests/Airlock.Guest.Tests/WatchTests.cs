using System.Net.Http.Headers;
using Airlock.Envd;
using Airlock.Envd.Client;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Filesystem;

namespace Airlock.Guest.Tests;

/// <summary>Directory watchers (E2B's <c>files.watchDir</c>), streamed and polled, against the real agent.</summary>
[Trait("Category", "Integration")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class WatchTests(AgentFixture agent) : IClassFixture<AgentFixture>
{
    /// <summary>A WatchDir stream read in the background.</summary>
    private sealed class Watch : IAsyncDisposable
    {
        private readonly List<FilesystemEvent> _events = [];
        private readonly CancellationTokenSource _stop;
        private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly Task _reader;

        public Watch(RawConnect connect, WatchDirRequest request, CancellationToken cancellationToken)
        {
            _stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            _reader = Task.Run(async () =>
            {
                try
                {
                    await foreach (var response in connect.StreamAsync("filesystem.Filesystem/WatchDir", request, WatchDirResponse.Parser, _stop.Token))
                    {
                        if (response.EventCase == WatchDirResponse.EventOneofCase.Start)
                        {
                            _started.TrySetResult();
                        }
                        else if (response.EventCase == WatchDirResponse.EventOneofCase.Filesystem)
                        {
                            lock (_events)
                            {
                                _events.Add(response.Filesystem);
                            }
                        }
                    }
                }
                catch (Exception e)
                {
                    _started.TrySetException(e);
                    throw;
                }
            }, CancellationToken.None);
        }

        public Task Started => _started.Task;

        public List<(EventType Type, string Name)> Events
        {
            get
            {
                lock (_events)
                {
                    return _events.Select(e => (e.Type, e.Name)).ToList();
                }
            }
        }

        public async Task WaitForAsync(EventType type, string name, CancellationToken cancellationToken)
        {
            while (!Events.Contains((type, name)))
            {
                Assert.False(_reader.IsCompleted, $"the watch ended before {type} {name}; it saw {string.Join(", ", Events)}");
                await Task.Delay(20, cancellationToken);
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            try
            {
                await _reader;
            }
            catch (Exception e) when (e is OperationCanceledException or HttpRequestException or IOException)
            {
            }

            _stop.Dispose();
        }
    }

    private string NewDirectory()
    {
        var dir = Path.Combine(agent.Root, "watch-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(Path.Combine(dir, "sub"));
        return dir;
    }

    [Theory(Timeout = 60_000)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_recursive_watch_streams_each_kind_of_event_named_relative_to_the_watched_directory(bool binary)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var dir = NewDirectory();
        await using var watch = new Watch(new RawConnect(agent, binary), new WatchDirRequest { Path = dir, Recursive = true }, timeout.Token);
        await watch.Started;

        await File.WriteAllTextAsync(Path.Combine(dir, "a.txt"), "one", timeout.Token);
        await watch.WaitForAsync(EventType.Write, "a.txt", timeout.Token);
        File.SetUnixFileMode(Path.Combine(dir, "a.txt"), UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.Move(Path.Combine(dir, "a.txt"), Path.Combine(dir, "b.txt"));
        await File.WriteAllTextAsync(Path.Combine(dir, "sub", "c.txt"), "deep", timeout.Token);
        Directory.CreateDirectory(Path.Combine(dir, "new"));
        await watch.WaitForAsync(EventType.Create, "new", timeout.Token);
        await File.WriteAllTextAsync(Path.Combine(dir, "new", "d.txt"), "later", timeout.Token);
        Directory.Move(Path.Combine(dir, "new"), Path.Combine(dir, "renamed"));
        await watch.WaitForAsync(EventType.Create, "renamed", timeout.Token);
        await File.WriteAllTextAsync(Path.Combine(dir, "renamed", "e.txt"), "followed", timeout.Token);
        File.Delete(Path.Combine(dir, "b.txt"));

        await watch.WaitForAsync(EventType.Remove, "b.txt", timeout.Token);
        await watch.WaitForAsync(EventType.Create, "renamed/e.txt", timeout.Token);

        // An upload (temporary sibling renamed into place) shows as envd's in-place write: created and written.
        await agent.Client().WriteFileAsync(Path.Combine(dir, "sub", "uploaded.txt"), new MemoryStream("up"u8.ToArray()), timeout.Token);
        await watch.WaitForAsync(EventType.Write, "sub/uploaded.txt", timeout.Token);
        var seen = watch.Events;
        Assert.Contains((EventType.Create, "sub/uploaded.txt"), seen);
        Assert.DoesNotContain(seen, e => e.Name.Contains(".airlock-", StringComparison.Ordinal));
        Assert.Contains((EventType.Create, "a.txt"), seen);
        Assert.Contains((EventType.Chmod, "a.txt"), seen);
        Assert.Contains((EventType.Rename, "a.txt"), seen);
        Assert.Contains((EventType.Create, "b.txt"), seen);
        Assert.Contains((EventType.Create, "sub/c.txt"), seen);
        Assert.Contains((EventType.Write, "sub/c.txt"), seen);
        Assert.Contains((EventType.Create, "new/d.txt"), seen);
        Assert.Contains((EventType.Rename, "new"), seen);
        Assert.DoesNotContain(seen, e => e.Name.StartsWith('/') || e.Name.StartsWith("new/e.txt", StringComparison.Ordinal));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_flat_watch_ignores_subdirectories_and_sends_keepalives_while_quiet()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var dir = NewDirectory();
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(agent.BaseAddress, "filesystem.Filesystem/WatchDir"));
        request.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token);
        request.Headers.Add(EnvdProtocol.KeepaliveHeader, "1");
        request.Headers.Add("Connect-Timeout-Ms", "3500");
        request.Content = new ByteArrayContent(ConnectCodec.Envelope(0, ConnectCodec.Serialize(new WatchDirRequest { Path = dir }, binary: false)));
        request.Content.Headers.ContentType = new MediaTypeHeaderValue(ConnectCodec.StreamJson);
        var call = agent.Http.SendAsync(request, timeout.Token);
        await Task.Delay(500, timeout.Token); // the watch is in place well before the writes (the body is read whole below)
        await File.WriteAllTextAsync(Path.Combine(dir, "sub", "hidden.txt"), "x", timeout.Token);
        await File.WriteAllTextAsync(Path.Combine(dir, "top.txt"), "x", timeout.Token);

        using var response = await call;
        var reader = new ConnectCodec.EnvelopeReader();
        reader.Append(await response.Content.ReadAsByteArrayAsync(timeout.Token));
        var kinds = new List<WatchDirResponse.EventOneofCase>();
        var names = new List<string>();
        ConnectException? end = null;
        while (reader.TryRead(out var flags, out var payload))
        {
            if ((flags & ConnectCodec.EndStreamFlag) != 0)
            {
                end = ConnectCodec.ReadError(payload, null);
                continue;
            }

            var message = ConnectCodec.Parse(WatchDirResponse.Parser, payload, binary: false);
            kinds.Add(message.EventCase);
            if (message.EventCase == WatchDirResponse.EventOneofCase.Filesystem)
            {
                names.Add(message.Filesystem.Name);
            }
        }

        Assert.Equal(WatchDirResponse.EventOneofCase.Start, kinds[0]);
        Assert.Contains("top.txt", names);
        Assert.DoesNotContain("sub/hidden.txt", names);
        Assert.InRange(kinds.Count(k => k == WatchDirResponse.EventOneofCase.Keepalive), 1, 4);
        Assert.Equal(ConnectCodes.DeadlineExceeded, end?.Code);
    }

    [Fact(Timeout = 60_000)]
    public async Task Watching_a_missing_path_a_file_or_a_directory_the_user_may_not_read_is_refused()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var dir = NewDirectory();
        await File.WriteAllTextAsync(Path.Combine(dir, "file.txt"), "x", timeout.Token);
        var forbidden = Directory.CreateTempSubdirectory("airlock-watch-forbidden-").FullName; // root's, 0700
        try
        {
            async Task<string> CodeOf(RawConnect connect, string path)
            {
                var e = await Assert.ThrowsAsync<EnvdException>(async () =>
                {
                    await foreach (var _ in connect.StreamAsync("filesystem.Filesystem/WatchDir", new WatchDirRequest { Path = path }, WatchDirResponse.Parser, timeout.Token))
                    {
                    }
                });
                return e.Code;
            }

            Assert.Equal(ConnectCodes.NotFound, await CodeOf(new RawConnect(agent), Path.Combine(dir, "missing")));
            Assert.Equal(ConnectCodes.InvalidArgument, await CodeOf(new RawConnect(agent), Path.Combine(dir, "file.txt")));
            Assert.Equal(ConnectCodes.PermissionDenied, await CodeOf(new RawConnect(agent, user: "nobody"), forbidden));
            var polled = await Assert.ThrowsAsync<EnvdException>(() => new RawConnect(agent).UnaryAsync("filesystem.Filesystem/CreateWatcher", new CreateWatcherRequest { Path = Path.Combine(dir, "missing") }, CreateWatcherResponse.Parser, timeout.Token));
            Assert.Equal(ConnectCodes.NotFound, polled.Code);
        }
        finally
        {
            Directory.Delete(forbidden);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_polled_watcher_hands_out_events_once_and_is_gone_after_removal()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var connect = new RawConnect(agent);
        var dir = NewDirectory();
        var id = (await connect.UnaryAsync("filesystem.Filesystem/CreateWatcher", new CreateWatcherRequest { Path = dir, Recursive = true }, CreateWatcherResponse.Parser, timeout.Token)).WatcherId;
        await File.WriteAllTextAsync(Path.Combine(dir, "sub", "polled.txt"), "x", timeout.Token);

        var events = new List<FilesystemEvent>();
        while (!events.Any(e => e.Name == "sub/polled.txt" && e.Type == EventType.Write))
        {
            await Task.Delay(50, timeout.Token);
            events.AddRange((await connect.UnaryAsync("filesystem.Filesystem/GetWatcherEvents", new GetWatcherEventsRequest { WatcherId = id }, GetWatcherEventsResponse.Parser, timeout.Token)).Events);
        }

        Assert.Contains(events, e => e.Name == "sub/polled.txt" && e.Type == EventType.Create);
        Assert.Empty((await connect.UnaryAsync("filesystem.Filesystem/GetWatcherEvents", new GetWatcherEventsRequest { WatcherId = id }, GetWatcherEventsResponse.Parser, timeout.Token)).Events);

        await connect.UnaryAsync("filesystem.Filesystem/RemoveWatcher", new RemoveWatcherRequest { WatcherId = id }, RemoveWatcherResponse.Parser, timeout.Token);
        var gone = await Assert.ThrowsAsync<EnvdException>(() => connect.UnaryAsync("filesystem.Filesystem/GetWatcherEvents", new GetWatcherEventsRequest { WatcherId = id }, GetWatcherEventsResponse.Parser, timeout.Token));
        Assert.Equal(ConnectCodes.NotFound, gone.Code);
        var again = await Assert.ThrowsAsync<EnvdException>(() => connect.UnaryAsync("filesystem.Filesystem/RemoveWatcher", new RemoveWatcherRequest { WatcherId = id }, RemoveWatcherResponse.Parser, timeout.Token));
        Assert.Equal(ConnectCodes.NotFound, again.Code);
    }

    [Fact(Timeout = 60_000)]
    public async Task Watchers_are_bounded_per_agent_and_a_removed_one_frees_its_slot()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var connect = new RawConnect(agent);
        var dir = NewDirectory();
        var ids = new List<string>();
        try
        {
            EnvdException? refused = null;
            for (var i = 0; i < 100 && refused is null; i++)
            {
                try
                {
                    ids.Add((await connect.UnaryAsync("filesystem.Filesystem/CreateWatcher", new CreateWatcherRequest { Path = dir }, CreateWatcherResponse.Parser, timeout.Token)).WatcherId);
                }
                catch (EnvdException e)
                {
                    refused = e;
                }
            }

            Assert.Equal(ConnectCodes.ResourceExhausted, refused?.Code);
            Assert.Equal(64, ids.Count);
            await connect.UnaryAsync("filesystem.Filesystem/RemoveWatcher", new RemoveWatcherRequest { WatcherId = ids[0] }, RemoveWatcherResponse.Parser, timeout.Token);
            ids.RemoveAt(0);
            ids.Add((await connect.UnaryAsync("filesystem.Filesystem/CreateWatcher", new CreateWatcherRequest { Path = dir }, CreateWatcherResponse.Parser, timeout.Token)).WatcherId);
        }
        finally
        {
            foreach (var id in ids)
            {
                await connect.UnaryAsync("filesystem.Filesystem/RemoveWatcher", new RemoveWatcherRequest { WatcherId = id }, RemoveWatcherResponse.Parser, timeout.Token);
            }
        }
    }
}
