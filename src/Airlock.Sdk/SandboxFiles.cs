using System.Text;
using Airlock.Envd.Client;

namespace Airlock.Sdk;

/// <summary>A sandbox's filesystem, as the sandbox user sees it.</summary>
public sealed class SandboxFiles
{
    private readonly Sandbox _sandbox;

    internal SandboxFiles(Sandbox sandbox) => _sandbox = sandbox;

    /// <summary>Writes UTF-8 text to <paramref name="path"/>, creating parent directories, replacing any file there.</summary>
    public Task WriteAsync(string path, string content, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(content);
        return WriteAsync(path, Encoding.UTF8.GetBytes(content), cancellationToken);
    }

    /// <summary>Writes bytes to <paramref name="path"/>.</summary>
    public async Task WriteAsync(string path, byte[] content, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(content);
        using var stream = new MemoryStream(content, writable: false);
        await WriteAsync(path, stream, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Writes the rest of <paramref name="content"/> to <paramref name="path"/>.</summary>
    public Task WriteAsync(string path, Stream content, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(content);
        return Call(path, () => _sandbox.Envd.WriteFileAsync(path, content, cancellationToken));
    }

    /// <summary>Reads <paramref name="path"/> as UTF-8 text.</summary>
    public async Task<string> ReadTextAsync(string path, CancellationToken cancellationToken = default)
    {
        var bytes = await ReadBytesAsync(path, cancellationToken).ConfigureAwait(false);
        return Encoding.UTF8.GetString(bytes);
    }

    /// <summary>Reads <paramref name="path"/> whole.</summary>
    public async Task<byte[]> ReadBytesAsync(string path, CancellationToken cancellationToken = default)
    {
        var stream = await OpenReadAsync(path, cancellationToken).ConfigureAwait(false);
        await using (stream.ConfigureAwait(false))
        {
            using var buffer = new MemoryStream();
            await stream.CopyToAsync(buffer, cancellationToken).ConfigureAwait(false);
            return buffer.ToArray();
        }
    }

    /// <summary>Opens <paramref name="path"/> for streaming; dispose the stream.</summary>
    public Task<Stream> OpenReadAsync(string path, CancellationToken cancellationToken = default) =>
        Call(path, () => _sandbox.Envd.ReadFileAsync(path, cancellationToken));

    /// <summary>Entries directly inside the directory <paramref name="path"/>.</summary>
    public Task<IReadOnlyList<FileEntry>> ListAsync(string path, CancellationToken cancellationToken = default) =>
        Call(path, () => _sandbox.Envd.ListDirAsync(path, 1, cancellationToken));

    /// <summary>Information about one path.</summary>
    public Task<FileEntry> StatAsync(string path, CancellationToken cancellationToken = default) =>
        Call(path, () => _sandbox.Envd.StatAsync(path, cancellationToken));

    /// <summary>Creates a directory (and its parents).</summary>
    public Task<FileEntry> MakeDirAsync(string path, CancellationToken cancellationToken = default) =>
        Call(path, () => _sandbox.Envd.MakeDirAsync(path, cancellationToken));

    /// <summary>Removes a file or directory tree.</summary>
    public Task RemoveAsync(string path, CancellationToken cancellationToken = default) =>
        Call(path, () => _sandbox.Envd.RemoveAsync(path, cancellationToken));

    private async Task Call(string path, Func<Task> call)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        try
        {
            await call().ConfigureAwait(false);
        }
        catch (EnvdException e)
        {
            throw _sandbox.Translate(e);
        }
        catch (HttpRequestException e)
        {
            throw new AirlockApiException(0, "unreachable", $"cannot reach sandbox {_sandbox.Id} for {path}: {e.Message}", e);
        }
    }

    private async Task<T> Call<T>(string path, Func<Task<T>> call)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (EnvdException e)
        {
            throw _sandbox.Translate(e);
        }
        catch (HttpRequestException e)
        {
            throw new AirlockApiException(0, "unreachable", $"cannot reach sandbox {_sandbox.Id} for {path}: {e.Message}", e);
        }
    }
}
