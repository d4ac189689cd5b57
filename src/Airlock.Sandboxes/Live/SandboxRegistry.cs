using System.Collections.Concurrent;

namespace Airlock.Sandboxes.Live;

/// <summary>
/// The sandboxes this node runs, and the per-sandbox gate that orders resume, kill and reap of a paused one (which
/// has no <see cref="LiveSandbox"/> to lock).
/// </summary>
internal sealed class SandboxRegistry
{
    private readonly ConcurrentDictionary<string, LiveSandbox> _live = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _gates = new(StringComparer.Ordinal);

    public ICollection<LiveSandbox> All => _live.Values;

    public bool TryGet(string sandboxId, out LiveSandbox live) => _live.TryGetValue(sandboxId, out live!);

    public bool Contains(string sandboxId) => _live.ContainsKey(sandboxId);

    public void Add(LiveSandbox live) => _live[live.Record.SandboxId] = live;

    public void Remove(string sandboxId) => _live.TryRemove(sandboxId, out _);

    /// <summary>Held while a paused sandbox is resumed, killed or reaped, so they cannot race.</summary>
    public async Task<IDisposable> LockPausedAsync(string sandboxId, CancellationToken cancellationToken)
    {
        var gate = _gates.GetOrAdd(sandboxId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        return new Releaser(gate);
    }

    private sealed class Releaser(SemaphoreSlim gate) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                gate.Release();
            }
        }
    }
}
