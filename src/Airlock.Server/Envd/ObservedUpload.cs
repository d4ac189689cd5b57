using System.IO.Pipelines;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Net.Http.Headers;

namespace Airlock.Server.Envd;

/// <summary>One file an upload wrote, as the audit records it.</summary>
internal sealed record UploadedFile(string Path, long Size, string Sha256);

/// <summary>
/// An upload's request body as the forwarder reads it: each chunk passes once, unchanged, from the client to the agent,
/// and is seen on the way (size and SHA-256 of the whole body; for multipart, of each file part). Nothing is buffered
/// beyond the chunk in hand and a small pipe to the multipart parser: no spool file, no rewind.
/// </summary>
/// <remarks>
/// <code>
/// client ─ Kestrel body ─ ObservedUpload.ReadAsync ─ YARP ─ agent
///                                 ├ SHA-256 of the whole body
///                                 └ Pipe ─ MultipartReader (its own task) ─ SHA-256 per part
/// </code>
/// The parser only observes: when it cannot read the parts (the agent decides whether the body is valid), the audit
/// falls back to the whole body under the query's path, so a write the agent accepts is never left unaudited.
/// </remarks>
internal sealed class ObservedUpload : Stream
{
    private const int PipePause = 1 << 20;
    private readonly Stream _inner;
    private readonly string _queryPath;
    private readonly IncrementalHash _whole = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private readonly Pipe? _pipe;
    private readonly Task<List<UploadedFile>?>? _parts;
    private long _size;
    private bool _feeding;
    private bool _ended;

    public ObservedUpload(Stream inner, string queryPath, string? multipartBoundary, long limit)
    {
        _inner = inner;
        _queryPath = queryPath;
        if (multipartBoundary is not null)
        {
            _pipe = new Pipe(new PipeOptions(pauseWriterThreshold: PipePause, resumeWriterThreshold: PipePause / 2, useSynchronizationContext: false));
            _feeding = true;
            _parts = Task.Run(() => ReadPartsAsync(_pipe.Reader, multipartBoundary, queryPath, limit));
        }
    }

    /// <summary>The body went past the request size limit (Kestrel refused the rest).</summary>
    public bool TooLarge { get; private set; }

    /// <summary>The files the upload carried, once the forwarder is done with the body.</summary>
    public async Task<IReadOnlyList<UploadedFile>> FilesAsync()
    {
        await EndPipeAsync().ConfigureAwait(false);
        var whole = new UploadedFile(_queryPath, _size, Convert.ToHexStringLower(_whole.GetHashAndReset()));
        return _parts is not null && await _parts.ConfigureAwait(false) is { Count: > 0 } parts ? parts : [whole];
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        int read;
        try
        {
            read = await _inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            TooLarge = true;
            throw;
        }

        if (read == 0)
        {
            // A zero-byte read (YARP waits for data that way, without holding a buffer) is not the end of the body.
            if (buffer.Length > 0)
            {
                await EndPipeAsync().ConfigureAwait(false);
            }

            return 0;
        }

        _whole.AppendData(buffer.Span[..read]);
        _size += read;
        if (_feeding && _pipe is not null)
        {
            // Back-pressure: when the parser is a megabyte behind, the client waits for it, not memory.
            var flushed = await _pipe.Writer.WriteAsync(buffer[..read], cancellationToken).ConfigureAwait(false);
            _feeding = !flushed.IsCompleted; // the parser gave up: stop feeding it, keep forwarding
        }

        return read;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer, offset, count, CancellationToken.None).GetAwaiter().GetResult();

    private async Task EndPipeAsync()
    {
        if (_pipe is not null && !_ended)
        {
            _ended = true;
            await _pipe.Writer.CompleteAsync().ConfigureAwait(false);
        }
    }

    private static async Task<List<UploadedFile>?> ReadPartsAsync(PipeReader pipe, string boundary, string queryPath, long limit)
    {
        var files = new List<UploadedFile>();
        try
        {
            await using var body = pipe.AsStream();
            var reader = new MultipartReader(boundary, body) { BodyLengthLimit = limit };
            while (await reader.ReadNextSectionAsync().ConfigureAwait(false) is { } section)
            {
                var fileName = ContentDispositionHeaderValue.TryParse(section.ContentDisposition, out var disposition)
                    ? HeaderUtilities.RemoveQuotes(disposition.FileName).Value ?? HeaderUtilities.RemoveQuotes(disposition.Name).Value
                    : null;
                var (size, sha) = await HashAsync(section.Body).ConfigureAwait(false);
                files.Add(new UploadedFile(queryPath.Length > 0 ? queryPath : fileName ?? "", size, sha));
            }

            return files;
        }
        catch (Exception ex) when (ex is InvalidDataException or IOException)
        {
            // Completed without the error: the forwarder's writes must not fail because the observer could not parse.
            await pipe.CompleteAsync().ConfigureAwait(false);
            return null; // not multipart the parser can read: the whole body is audited instead
        }
    }

    private static async Task<(long Size, string Sha256)> HashAsync(Stream body)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(81920);
        try
        {
            long size = 0;
            int read;
            while ((read = await body.ReadAsync(buffer).ConfigureAwait(false)) > 0)
            {
                hash.AppendData(buffer, 0, read);
                size += read;
            }

            return (size, Convert.ToHexStringLower(hash.GetHashAndReset()));
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _whole.Dispose();
        }

        base.Dispose(disposing);
    }
}
