using System.Collections.Concurrent;

namespace Airlock.Sandboxes.Live;

/// <summary>
/// Counts the envd requests in flight per sandbox (a running command's stream, an upload), so a timeout pause can let
/// them finish first instead of cutting them (a command cut by the pause would look like a reset connection).
/// </summary>
public sealed class ActivityTracker
{
    private readonly ConcurrentDictionary<string, Counter> _counters = new(StringComparer.Ordinal);

    /// <summary>Marks one request in flight until the returned handle is disposed.</summary>
    public IDisposable Enter(string sandboxId)
    {
        var counter = _counters.GetOrAdd(sandboxId, _ => new Counter());
        Interlocked.Increment(ref counter.Active);
        return new Exit(counter);
    }

    public int InFlight(string sandboxId) => _counters.TryGetValue(sandboxId, out var c) ? Volatile.Read(ref c.Active) : 0;

    /// <summary>Waits until nothing is in flight for the sandbox or <paramref name="grace"/> passes; returns what is still in flight.</summary>
    public async Task<int> WaitIdleAsync(string sandboxId, TimeSpan grace, TimeProvider time, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(time);
        var deadline = time.GetUtcNow() + grace;
        while (InFlight(sandboxId) > 0 && time.GetUtcNow() < deadline)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(100), time, cancellationToken).ConfigureAwait(false);
        }

        return InFlight(sandboxId);
    }

    public void Forget(string sandboxId) => _counters.TryRemove(sandboxId, out _);

    private sealed class Counter
    {
        public int Active;
    }

    private sealed class Exit(Counter counter) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                Interlocked.Decrement(ref counter.Active);
            }
        }
    }
}
