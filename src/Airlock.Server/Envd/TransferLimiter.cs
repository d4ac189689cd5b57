namespace Airlock.Server.Envd;

/// <summary>
/// At most <c>limit</c> file transfers (<c>GET</c>/<c>POST /files</c>) in flight per sandbox. Over the limit a request is
/// refused at once (429 with Retry-After), never queued: a queue would only move the pile-up from the agent to airlockd.
/// </summary>
internal sealed class TransferLimiter(int limit)
{
    private readonly Dictionary<string, int> _inFlight = new(StringComparer.Ordinal);

    public int Limit => limit;

    /// <summary>A slot for one transfer (dispose it when the transfer ends), or null when the sandbox has none free.</summary>
    public IDisposable? TryEnter(string sandboxId)
    {
        lock (_inFlight)
        {
            var count = _inFlight.GetValueOrDefault(sandboxId);
            if (count >= limit)
            {
                return null;
            }

            _inFlight[sandboxId] = count + 1;
        }

        return new Slot(this, sandboxId);
    }

    /// <summary>Transfers in flight for a sandbox now.</summary>
    public int InFlight(string sandboxId)
    {
        lock (_inFlight)
        {
            return _inFlight.GetValueOrDefault(sandboxId);
        }
    }

    private void Leave(string sandboxId)
    {
        lock (_inFlight)
        {
            var count = _inFlight.GetValueOrDefault(sandboxId) - 1;
            if (count <= 0)
            {
                _inFlight.Remove(sandboxId);
            }
            else
            {
                _inFlight[sandboxId] = count;
            }
        }
    }

    private sealed class Slot(TransferLimiter owner, string sandboxId) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                owner.Leave(sandboxId);
            }
        }
    }
}
