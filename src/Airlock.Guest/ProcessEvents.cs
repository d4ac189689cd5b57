using System.Threading.Channels;
using Airlock.Envd.Protocol.Process;

namespace Airlock.Guest;

/// <summary>
/// Fans a process's events out to its subscribers: the Start stream and any number of Connect streams.
/// </summary>
/// <remarks>
/// The buffering policy, so that a process never depends on who is watching it:
/// <list type="bullet">
/// <item>No subscriber: output is read and dropped. Nothing accumulates and the process is never blocked, however long
/// it runs unwatched; a later Connect sees output from the moment it attaches (envd's behaviour; nothing is replayed).</item>
/// <item>Subscribers: each has a bounded queue of <see cref="QueuedEvents"/> events (at most 32 KiB each). A full queue
/// makes the reader wait, so a slow client slows the process's writes down instead of losing output or growing memory
/// (envd does the same). A subscriber that goes away (its request ends or is aborted) is removed at once, which frees
/// a waiting reader; Kestrel aborts a client that stops reading its response.</item>
/// </list>
/// </remarks>
internal sealed class ProcessEvents
{
    /// <summary>Events queued per subscriber before the process's output waits.</summary>
    public const int QueuedEvents = 64;

    private readonly Lock _gate = new();
    private readonly List<Channel<ProcessEvent>> _subscribers = [];
    private ProcessEvent? _end;

    public bool HasEnded
    {
        get
        {
            lock (_gate)
            {
                return _end is not null;
            }
        }
    }

    /// <summary>Subscribes to the events from now on; the channel completes after the end event.</summary>
    public ChannelReader<ProcessEvent> Subscribe()
    {
        var channel = Channel.CreateBounded<ProcessEvent>(new BoundedChannelOptions(QueuedEvents)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        lock (_gate)
        {
            if (_end is not null)
            {
                channel.Writer.TryWrite(_end);
                channel.Writer.TryComplete();
            }
            else
            {
                _subscribers.Add(channel);
            }
        }

        return channel.Reader;
    }

    public void Unsubscribe(ChannelReader<ProcessEvent> reader)
    {
        lock (_gate)
        {
            var index = _subscribers.FindIndex(c => c.Reader == reader);
            if (index >= 0)
            {
                _subscribers[index].Writer.TryComplete();
                _subscribers.RemoveAt(index);
            }
        }
    }

    /// <summary>Delivers an output event to every subscriber, waiting while one's queue is full.</summary>
    public async ValueTask PublishAsync(ProcessEvent e)
    {
        Channel<ProcessEvent>[] subscribers;
        lock (_gate)
        {
            if (_subscribers.Count == 0 || _end is not null)
            {
                return; // unwatched output is dropped; output after the end (a background child's) has no stream left
            }

            subscribers = [.. _subscribers];
        }

        foreach (var subscriber in subscribers)
        {
            try
            {
                await subscriber.Writer.WriteAsync(e);
            }
            catch (ChannelClosedException)
            {
                // Unsubscribed while we waited.
            }
        }
    }

    /// <summary>Publishes the end event to every subscriber and completes their channels.</summary>
    public void End(ProcessEvent e)
    {
        lock (_gate)
        {
            _end = e;
            for (var i = _subscribers.Count - 1; i >= 0; i--)
            {
                var subscriber = _subscribers[i];
                if (subscriber.Writer.TryWrite(e))
                {
                    subscriber.Writer.TryComplete();
                    _subscribers.RemoveAt(i);
                }
                else
                {
                    // A full queue: the end follows once its reader makes room. It stays listed until then, so that an
                    // Unsubscribe in the meantime still completes it and frees the wait.
                    _ = DeliverEndAsync(subscriber, e);
                }
            }
        }
    }

    private async Task DeliverEndAsync(Channel<ProcessEvent> subscriber, ProcessEvent e)
    {
        try
        {
            await subscriber.Writer.WriteAsync(e);
            subscriber.Writer.TryComplete();
        }
        catch (ChannelClosedException)
        {
            // The subscriber went away first.
        }

        lock (_gate)
        {
            _subscribers.Remove(subscriber);
        }
    }
}
