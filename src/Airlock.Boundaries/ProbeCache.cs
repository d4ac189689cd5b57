using Airlock.Core.Drivers;

namespace Airlock.Boundaries;

/// <summary>A driver's host probe, run once per process: the first caller runs it, later ones get its answer.</summary>
internal sealed class ProbeCache
{
    private readonly SemaphoreSlim _lock = new(1, 1);
    private DriverAvailability? _result;

    public async Task<DriverAvailability> GetAsync(Func<CancellationToken, Task<DriverAvailability>> probe, CancellationToken cancellationToken)
    {
        await _lock.WaitAsync(cancellationToken);
        try
        {
            return _result ??= await probe(cancellationToken);
        }
        finally
        {
            _lock.Release();
        }
    }
}
