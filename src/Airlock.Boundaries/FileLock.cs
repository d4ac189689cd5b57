namespace Airlock.Boundaries;

/// <summary>A host-wide exclusive lock on a file (flock through FileShare.None), held until disposed or the holder dies.</summary>
internal static class FileLock
{
    public static async Task<FileStream> AcquireAsync(string path, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(100), cancellationToken);
            }
        }
    }
}
