using System.Buffers;
using System.Text.Json;
using Airlock.Envd.Connect;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Net.Http.Headers;

namespace Airlock.Guest;

/// <summary>envd's plain-HTTP file endpoints: <c>GET /files</c> (download) and <c>POST /files</c> (upload).</summary>
internal sealed class FileTransfer(AgentOptions options, Users users, FilesystemService filesystem)
{
    private const string TemporaryMarker = ".airlock-";

    /// <summary>Bytes read and written per step of a download.</summary>
    private const int ChunkSize = 64 * 1024;

    public async Task DownloadAsync(HttpContext context)
    {
        try
        {
            var user = ResolveUser(context);
            var path = Paths.Resolve(context.Request.Query["path"].ToString(), user);
            // Opened as the user, so its permissions decide; the open handle is then read on any thread. Anything but
            // a regular file (a FIFO, socket or device, a symlink to one) is refused without waiting on it.
            var file = FilesystemService.Guard(() => users.As(user, () =>
            {
                try
                {
                    return RegularFile.Open(path);
                }
                catch (UnauthorizedAccessException)
                {
                    throw new ConnectException(ConnectCodes.PermissionDenied, $"user '{user.Name}' may not read '{path}'");
                }
            }));
            using (file)
            {
                await SendAsync(context, file);
            }
        }
        catch (ConnectException e)
        {
            await WriteErrorAsync(context, e);
        }
    }

    /// <summary>
    /// Sends a file: the first chunk is read before anything is sent, so a file that cannot be read is still a clean
    /// error and a pseudo-file that fits in it gets its exact length. A file of known length sends exactly that many
    /// bytes (one that shrank meanwhile aborts the response: a short body is never passed off as the whole file); one
    /// of unknown length is streamed without a Content-Length, and one past <see cref="RegularFile.PseudoFileLimit"/>
    /// aborts the response. The client going away (or Kestrel's minimum response rate) ends the copy between chunks.
    /// </summary>
    private static async Task SendAsync(HttpContext context, RegularFile file)
    {
        var cancellationToken = context.RequestAborted;
        var limit = file.Length ?? RegularFile.PseudoFileLimit + 1L;
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkSize);
        try
        {
            int count;
            try
            {
                count = file.Fill(buffer.AsSpan(0, (int)Math.Min(ChunkSize, limit)));
            }
            catch (IOException e)
            {
                throw new ConnectException(ConnectCodes.FailedPrecondition, e.Message);
            }

            context.Response.StatusCode = StatusCodes.Status200OK;
            context.Response.ContentType = "application/octet-stream";
            context.Response.ContentLength = file.Length ?? (count < ChunkSize ? count : null);
            var disposition = new ContentDispositionHeaderValue("attachment");
            disposition.SetHttpFileName(Path.GetFileName(file.Path));
            context.Response.Headers[HeaderNames.ContentDisposition] = disposition.ToString();
            var sent = 0L;
            try
            {
                while (count > 0)
                {
                    await context.Response.Body.WriteAsync(buffer.AsMemory(0, count), cancellationToken);
                    sent += count;
                    count = sent < limit ? file.Fill(buffer.AsSpan(0, (int)Math.Min(ChunkSize, limit - sent))) : 0;
                }
            }
            catch (IOException) when (!cancellationToken.IsCancellationRequested)
            {
                context.Abort(); // a read failed after the headers went out
                return;
            }

            if (sent != (file.Length ?? sent) || sent > RegularFile.PseudoFileLimit)
            {
                context.Abort();
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    public async Task UploadAsync(HttpContext context)
    {
        // Uploads are as large as the sandbox's disk allows; the stream is copied, never buffered whole.
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
        {
            limit.MaxRequestBodySize = null;
        }

        try
        {
            var user = ResolveUser(context);
            var target = context.Request.Query["path"].ToString();
            var written = new List<string>();
            var contentType = context.Request.ContentType;
            if (contentType is not null && contentType.StartsWith("multipart/form-data", StringComparison.OrdinalIgnoreCase))
            {
                var boundary = HeaderUtilities.RemoveQuotes(MediaTypeHeaderValue.Parse(contentType).Boundary).Value;
                if (string.IsNullOrEmpty(boundary))
                {
                    throw new ConnectException(ConnectCodes.InvalidArgument, "the multipart body has no boundary");
                }

                var reader = new MultipartReader(boundary, context.Request.Body) { BodyLengthLimit = null };
                MultipartSection? section;
                while ((section = await reader.ReadNextSectionAsync(context.RequestAborted)) is not null)
                {
                    // Like envd, a part named "file" is a file even without a filename (a browser's FormData string
                    // value, as the SDK's signed-URL examples post); other fields are skipped.
                    if (!ContentDispositionHeaderValue.TryParse(section.ContentDisposition, out var disposition)
                        || !(disposition.IsFileDisposition() || HeaderUtilities.RemoveQuotes(disposition.Name).Equals("file", StringComparison.Ordinal)))
                    {
                        continue;
                    }

                    var name = HeaderUtilities.RemoveQuotes(disposition.FileNameStar.HasValue ? disposition.FileNameStar : disposition.FileName).Value;
                    string destination;
                    if (target.Length > 0)
                    {
                        if (written.Count > 0)
                        {
                            throw new ConnectException(ConnectCodes.InvalidArgument, "with ?path= the upload must hold exactly one file; name each file in its part instead");
                        }

                        destination = target;
                    }
                    else
                    {
                        destination = name ?? throw new ConnectException(ConnectCodes.InvalidArgument, "a multipart file part has no filename and no ?path= was given");
                    }

                    written.Add(await WriteAsync(Paths.Resolve(destination, user), section.Body, user, context.RequestAborted));
                }

                if (written.Count == 0)
                {
                    throw new ConnectException(ConnectCodes.InvalidArgument, "the multipart body holds no file part");
                }
            }
            else if (contentType is null || contentType.StartsWith("application/octet-stream", StringComparison.OrdinalIgnoreCase))
            {
                if (target.Length == 0)
                {
                    throw new ConnectException(ConnectCodes.InvalidArgument, "?path= is required for an application/octet-stream upload");
                }

                written.Add(await WriteAsync(Paths.Resolve(target, user), context.Request.Body, user, context.RequestAborted));
            }
            else
            {
                context.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
                await WriteErrorBodyAsync(context, 415, $"content type '{contentType}' is not supported; use multipart/form-data or application/octet-stream");
                return;
            }

            context.Response.StatusCode = StatusCodes.Status200OK;
            context.Response.ContentType = "application/json";
            var buffer = new ArrayBufferWriter<byte>();
            using (var writer = new Utf8JsonWriter(buffer))
            {
                writer.WriteStartArray();
                foreach (var path in written)
                {
                    writer.WriteStartObject();
                    writer.WriteString("name", Path.GetFileName(path));
                    writer.WriteString("type", "file");
                    writer.WriteString("path", path);
                    writer.WriteEndObject();
                }

                writer.WriteEndArray();
            }

            await context.Response.Body.WriteAsync(buffer.WrittenMemory, context.RequestAborted);
        }
        catch (ConnectException e)
        {
            await WriteErrorAsync(context, e);
        }
        catch (InvalidDataException e)
        {
            await WriteErrorAsync(context, new ConnectException(ConnectCodes.InvalidArgument, $"the multipart body is malformed: {e.Message}"));
        }
        catch (IOException e) when (!context.RequestAborted.IsCancellationRequested)
        {
            await WriteErrorAsync(context, new ConnectException(ConnectCodes.InvalidArgument, $"the upload ended early: {e.Message}"));
        }
    }

    /// <summary>
    /// Writes a file through a temporary sibling renamed into place, so a failed upload never leaves half a file and a
    /// symlink at the destination is replaced, not written through. Every path-based step runs as the user (see
    /// <see cref="Users.As{T}"/>), so the new file is the user's and a directory the user may not write is refused.
    /// </summary>
    private async Task<string> WriteAsync(string path, Stream content, UserAccount user, CancellationToken cancellationToken)
    {
        var directory = Path.GetDirectoryName(path) ?? "/";
        var temporary = Path.Combine(directory, $".{Path.GetFileName(path)}{TemporaryMarker}{Guid.NewGuid():N}");
        var file = FilesystemService.Guard(() => users.As(user, () =>
        {
            // What is at the path is replaced by a rename, never opened, so nothing here can block; a FIFO, socket or
            // device is refused anyway, as sandbox code may be waiting on it.
            switch (FileStatus.Lstat(path))
            {
                case { Type: FileStatus.Directory }:
                    throw new ConnectException(ConnectCodes.InvalidArgument, $"'{path}' is a directory");
                case { SpecialKind: { } kind }:
                    throw new ConnectException(ConnectCodes.FailedPrecondition, $"'{path}' is {kind}; the file API reads and writes only regular files");
            }

            try
            {
                filesystem.CreateDirectories(directory);
                return new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.Asynchronous);
            }
            catch (UnauthorizedAccessException)
            {
                throw new ConnectException(ConnectCodes.PermissionDenied, $"user '{user.Name}' may not write '{path}'");
            }
        }));
        var moved = false;
        try
        {
            await using (file)
            {
                try
                {
                    await content.CopyToAsync(file, 81920, cancellationToken);
                }
                catch (IOException e) when ((e.HResult & 0xFFFF) == 28)
                {
                    throw new ConnectException(ConnectCodes.ResourceExhausted, "no space left on the sandbox's disk");
                }
            }

            FilesystemService.Guard(() => users.As(user, () =>
            {
                try
                {
                    File.Move(temporary, path, overwrite: true);
                    moved = true;
                }
                catch (UnauthorizedAccessException)
                {
                    throw new ConnectException(ConnectCodes.PermissionDenied, $"user '{user.Name}' may not replace '{path}'");
                }
            }));
            return path;
        }
        finally
        {
            if (!moved)
            {
                users.As(user, () => File.Delete(temporary));
            }
        }
    }

    /// <summary>True for the name of an upload's temporary sibling (<c>.{name}.airlock-{32 hex}</c>).</summary>
    internal static bool IsTemporary(string fileName)
    {
        var marker = fileName.LastIndexOf(TemporaryMarker, StringComparison.Ordinal);
        return fileName.StartsWith('.') && marker > 0 && fileName.Length - marker - TemporaryMarker.Length == 32
            && !fileName.AsSpan(marker + TemporaryMarker.Length).ContainsAnyExcept("0123456789abcdef".AsSpan());
    }

    private UserAccount ResolveUser(HttpContext context)
    {
        // A signed URL acts only as the user it was signed for: an Authorization header cannot swap in another.
        var name = context.Request.Query["username"].ToString();
        var signed = context.Items.ContainsKey(SignedFileUrls.SignedItem);
        return users.Resolve(name.Length > 0 || signed ? name : ConnectRpc.User(context), options.DefaultUser);
    }

    /// <summary>envd's REST errors are <c>{"code": &lt;http status&gt;, "message": ...}</c>.</summary>
    private static Task WriteErrorAsync(HttpContext context, ConnectException error)
    {
        if (context.Response.HasStarted)
        {
            return Task.CompletedTask;
        }

        // On these routes resource_exhausted only ever means a full disk, which envd answers with 507.
        var status = error.Code == ConnectCodes.ResourceExhausted ? StatusCodes.Status507InsufficientStorage : error.HttpStatus;
        context.Response.StatusCode = status;
        return WriteErrorBodyAsync(context, status, error.Message);
    }

    /// <summary>Writes envd's REST error: <c>{"code": status, "message": ...}</c> with that status.</summary>
    internal static async Task WriteErrorBodyAsync(HttpContext context, int status, string message)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteNumber("code", status);
            writer.WriteString("message", message);
            writer.WriteEndObject();
        }

        await context.Response.Body.WriteAsync(buffer.WrittenMemory, context.RequestAborted);
    }
}
