using System.Collections.Concurrent;
using System.Threading.Channels;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Filesystem;
using Google.Protobuf;

namespace Airlock.Guest;

/// <summary>
/// The watcher methods of envd's <c>filesystem.Filesystem</c>: <c>WatchDir</c> (a server stream: a start event, then
/// filesystem events and keepalives) and the polled <c>CreateWatcher</c> / <c>GetWatcherEvents</c> /
/// <c>RemoveWatcher</c>. Paths resolve for the requesting user, whose permissions decide what may be watched.
/// </summary>
/// <remarks>
/// Bounds: <see cref="MaxWatchers"/> watchers of either kind per agent (each is an inotify instance and a thread);
/// a stream queues at most <see cref="MaxStreamedEvents"/> events for a slow client and a polled watcher keeps at most
/// <see cref="MaxPolledEvents"/> between polls. Past either bound the watcher stops with <c>resource_exhausted</c>
/// rather than lose events silently (a stream ends with it; a polled watcher answers it until removed).
/// </remarks>
internal sealed class WatchService(AgentOptions options, Users users, Entries entries)
{
    public const int MaxWatchers = 64;
    public const int MaxStreamedEvents = 4096;
    public const int MaxPolledEvents = 10_000;

    private readonly ConcurrentDictionary<string, PolledWatcher> _polled = new(StringComparer.Ordinal);
    private int _active;

    public static bool Handles(HttpContext context) =>
        context.Request.RouteValues["method"] is "WatchDir" or "CreateWatcher" or "GetWatcherEvents" or "RemoveWatcher";

    public Task HandleAsync(HttpContext context) => context.Request.RouteValues["method"] switch
    {
        "WatchDir" => ConnectRpc.StreamAsync(context, WatchDirRequest.Parser, (request, stream, ct) => WatchDirAsync(context, request, stream, ct)),
        "CreateWatcher" => ConnectRpc.UnaryAsync(context, CreateWatcherRequest.Parser, (request, _) => ValueTask.FromResult<IMessage>(CreateWatcher(context, request))),
        "GetWatcherEvents" => ConnectRpc.UnaryAsync(context, GetWatcherEventsRequest.Parser, (request, _) => ValueTask.FromResult<IMessage>(GetWatcherEvents(request))),
        _ => ConnectRpc.UnaryAsync(context, RemoveWatcherRequest.Parser, (request, _) => ValueTask.FromResult<IMessage>(RemoveWatcher(request))),
    };

    private async Task WatchDirAsync(HttpContext context, WatchDirRequest request, ConnectStream stream, CancellationToken cancellationToken)
    {
        var events = Channel.CreateBounded<FilesystemEvent>(new BoundedChannelOptions(MaxStreamedEvents) { SingleReader = true, SingleWriter = true });
        using var watch = Start(context, request.Path, request.Recursive, request.IncludeEntry, e =>
        {
            if (!events.Writer.TryWrite(e))
            {
                events.Writer.TryComplete(new ConnectException(ConnectCodes.ResourceExhausted, $"more than {MaxStreamedEvents} events waited for this stream; it fell behind and was stopped"));
            }
        }, error => events.Writer.TryComplete(error));
        await stream.WriteAsync(new WatchDirResponse { Start = new WatchDirResponse.Types.StartEvent() }, cancellationToken);

        var keepalive = ConnectRpc.KeepaliveInterval(context);
        Task<bool>? waiting = null;
        Task? tick = null;
        while (true)
        {
            waiting ??= events.Reader.WaitToReadAsync(cancellationToken).AsTask();
            if (keepalive is { } interval)
            {
                tick ??= Task.Delay(interval, cancellationToken);
                if (await Task.WhenAny(waiting, tick) != waiting)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    tick = null;
                    await stream.WriteAsync(new WatchDirResponse { Keepalive = new WatchDirResponse.Types.KeepAlive() }, cancellationToken);
                    continue;
                }
            }

            if (!await waiting)
            {
                return;
            }

            waiting = null;
            while (events.Reader.TryRead(out var e))
            {
                await stream.WriteAsync(new WatchDirResponse { Filesystem = e }, cancellationToken);
            }
        }
    }

    private CreateWatcherResponse CreateWatcher(HttpContext context, CreateWatcherRequest request)
    {
        var id = "w" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8));
        var watcher = new PolledWatcher();
        watcher.Watch = Start(context, request.Path, request.Recursive, request.IncludeEntry, watcher.Add, watcher.Fail);
        _polled[id] = watcher;
        return new CreateWatcherResponse { WatcherId = id };
    }

    private GetWatcherEventsResponse GetWatcherEvents(GetWatcherEventsRequest request)
    {
        var response = new GetWatcherEventsResponse();
        response.Events.AddRange(Find(request.WatcherId).Take());
        return response;
    }

    private RemoveWatcherResponse RemoveWatcher(RemoveWatcherRequest request)
    {
        if (!_polled.TryRemove(request.WatcherId, out var watcher))
        {
            throw NotFound(request.WatcherId);
        }

        watcher.Watch?.Dispose();
        return new RemoveWatcherResponse();
    }

    private PolledWatcher Find(string id) => _polled.TryGetValue(id, out var watcher) ? watcher : throw NotFound(id);

    private static ConnectException NotFound(string id) => new(ConnectCodes.NotFound, $"watcher with id '{id}' not found");

    /// <summary>Resolves the path for the requesting user, reserves a watcher slot and starts the watch.</summary>
    private Lease Start(HttpContext context, string path, bool recursive, bool includeEntry, Action<FilesystemEvent> onEvent, Action<ConnectException> onError)
    {
        var user = users.Resolve(ConnectRpc.User(context), options.DefaultUser);
        var root = Paths.Resolve(path, user);
        FilesystemService.Guard(() => users.As(user, () =>
        {
            if (!entries.Exists(root))
            {
                throw new ConnectException(ConnectCodes.NotFound, $"path '{root}' not found");
            }

            if (!Directory.Exists(root))
            {
                throw new ConnectException(ConnectCodes.InvalidArgument, $"path '{root}' is not a directory");
            }
        }));

        // Reserve before starting, release on failure: concurrent requests cannot overshoot the bound.
        if (Interlocked.Increment(ref _active) > MaxWatchers)
        {
            Interlocked.Decrement(ref _active);
            throw new ConnectException(ConnectCodes.ResourceExhausted, $"this sandbox already has {MaxWatchers} watchers; remove one first");
        }

        try
        {
            var watch = DirectoryWatch.Start(
                root,
                recursive,
                add => users.As(user, add),
                (e, full) =>
                {
                    if (includeEntry && Describe(user, full) is { } entry)
                    {
                        e.Entry = entry;
                    }

                    onEvent(e);
                },
                onError);
            return new Lease(watch, () => Interlocked.Decrement(ref _active));
        }
        catch
        {
            Interlocked.Decrement(ref _active);
            throw;
        }
    }

    private EntryInfo? Describe(UserAccount user, string path)
    {
        try
        {
            return users.As(user, () => entries.Exists(path) ? entries.Describe(path) : null);
        }
        catch (ConnectException)
        {
            return null; // gone or unreadable by the time the event is read
        }
    }

    /// <summary>A running watch and its slot; disposing stops the one and frees the other, once.</summary>
    private sealed class Lease(DirectoryWatch watch, Action release) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                watch.Dispose();
                release();
            }
        }
    }

    /// <summary>A watcher whose events wait for <c>GetWatcherEvents</c>.</summary>
    private sealed class PolledWatcher
    {
        private readonly Lock _gate = new();
        private List<FilesystemEvent> _events = [];
        private ConnectException? _error;

        public IDisposable? Watch { get; set; }

        public void Add(FilesystemEvent e)
        {
            lock (_gate)
            {
                if (_error is not null)
                {
                    return;
                }

                if (_events.Count >= MaxPolledEvents)
                {
                    Fail(new ConnectException(ConnectCodes.ResourceExhausted, $"more than {MaxPolledEvents} events arrived between polls; the watcher was stopped"));
                    return;
                }

                _events.Add(e);
            }
        }

        public void Fail(ConnectException error)
        {
            lock (_gate)
            {
                _error ??= error;
                _events = [];
            }

            // Stop watching (frees the slot) but stay listed, so the client learns why at its next poll.
            Task.Run(() => Watch?.Dispose());
        }

        public List<FilesystemEvent> Take()
        {
            lock (_gate)
            {
                if (_error is not null)
                {
                    throw _error;
                }

                var events = _events;
                _events = [];
                return events;
            }
        }
    }
}
