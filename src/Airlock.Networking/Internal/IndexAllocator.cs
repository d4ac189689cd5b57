using System.Globalization;

namespace Airlock.Networking.Internal;

/// <summary>
/// Hands out network indices so that concurrent creates, in this process or in another airlockd,
/// never share a host address.
/// </summary>
/// <remarks>
/// <code>
///   lock /run/airlock/network.lock (flock, exclusive, host-wide)
///     used = leases (StateDir/leases/&lt;sandboxId&gt; = index) ∪ indices in alias of /sys/class/net/alk*
///     index = existing lease of this sandbox, else lowest free
///     write lease
///   ip link add alk… ; ip link set alk… alias airlock:&lt;id&gt;:&lt;index&gt;
///   unlock
/// </code>
/// The lease is written before any interface exists, so a crash between the two still reserves the index
/// until the leftover is cleaned.
/// </remarks>
internal sealed class IndexAllocator(NetworkOptions options)
{
    private readonly SemaphoreSlim _gate = new(1, 1);

    private string LeaseDir => Path.Combine(options.StateDir, "leases");

    private string LockPath => options.LockPath;

    /// <summary>
    /// Takes the host-wide allocation lock. Hold it from <see cref="Allocate"/> until the host interface
    /// carries its alias, so an airlockd with another state directory sees the index as taken.
    /// </summary>
    public async Task<IDisposable> LockAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            var file = await LockFileAsync(cancellationToken);
            return new Held(this, file);
        }
        catch
        {
            _gate.Release();
            throw;
        }
    }

    /// <summary>Returns this sandbox's leased index or leases the lowest free one. Call under <see cref="LockAsync"/>.</summary>
    public int Allocate(string sandboxId)
    {
        var leases = ReadLeases();
        if (leases.TryGetValue(sandboxId, out var existing))
        {
            return existing;
        }

        var used = new HashSet<int>(leases.Values);
        foreach (var (_, alias) in HostInterfaces.List(options))
        {
            if (HostInterfaces.ParseAlias(alias) is { } parsed)
            {
                used.Add(parsed.Index);
            }
        }

        for (var index = 0; index < options.MaxSandboxes; index++)
        {
            if (!used.Contains(index))
            {
                var path = Path.Combine(LeaseDir, sandboxId);
                var tmp = path + ".tmp";
                File.WriteAllText(tmp, index.ToString(CultureInfo.InvariantCulture));
                File.Move(tmp, path, overwrite: true);
                return index;
            }
        }

        throw new NetworkSetupException($"No free sandbox network index: all {options.MaxSandboxes} are in use.");
    }

    public int? Find(string sandboxId) => ReadLeases().TryGetValue(sandboxId, out var index) ? index : null;

    public IReadOnlyCollection<string> LeasedSandboxes() => ReadLeases().Keys;

    public void Release(string sandboxId)
    {
        try
        {
            File.Delete(Path.Combine(LeaseDir, sandboxId));
        }
        catch (DirectoryNotFoundException)
        {
        }
    }

    private Dictionary<string, int> ReadLeases()
    {
        var leases = new Dictionary<string, int>(StringComparer.Ordinal);
        if (!Directory.Exists(LeaseDir))
        {
            return leases;
        }

        foreach (var file in Directory.EnumerateFiles(LeaseDir))
        {
            var name = Path.GetFileName(file);
            if (!NetworkNames.IsValidSandboxId(name))
            {
                continue;
            }

            try
            {
                if (int.TryParse(File.ReadAllText(file).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var index))
                {
                    leases[name] = index;
                }
            }
            catch (FileNotFoundException)
            {
                // Released concurrently by a delete.
            }
        }

        return leases;
    }

    private async Task<FileStream> LockFileAsync(CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(LeaseDir);
        Directory.CreateDirectory(Path.GetDirectoryName(LockPath)!);
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                // On Unix, FileShare.None takes an exclusive flock(2): another airlockd waits here.
                return new FileStream(LockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (attempt < 3000)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(10), cancellationToken);
            }
        }
    }

    private sealed class Held(IndexAllocator owner, FileStream file) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                file.Dispose();
                owner._gate.Release();
            }
        }
    }
}
