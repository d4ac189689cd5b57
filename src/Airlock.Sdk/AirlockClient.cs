using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Airlock.Core.Api;

namespace Airlock.Sdk;

/// <summary>
/// Client for airlockd's control API. Create sandboxes with <see cref="CreateSandboxAsync"/> and dispose them
/// (<c>await using</c>) to kill them.
/// </summary>
/// <example>
/// <code>
/// using var client = new AirlockClient(AirlockClientOptions.FromEnvironment());
/// await using var sandbox = await client.CreateSandboxAsync(new() { Risk = "low" });
/// var result = await sandbox.ExecAsync("echo hello");
/// </code>
/// </example>
public sealed partial class AirlockClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly bool _ownsHttp;

    /// <summary>A client for the default local airlockd, with the key resolved from the environment.</summary>
    public AirlockClient() : this(AirlockClientOptions.FromEnvironment())
    {
    }

    /// <summary>A client with explicit options.</summary>
    public AirlockClient(AirlockClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!options.BaseUrl.IsAbsoluteUri)
        {
            throw new ArgumentException("BaseUrl must be absolute.", nameof(options));
        }

        if (options.Timeout <= TimeSpan.Zero && options.Timeout != System.Threading.Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentException("Timeout must be positive.", nameof(options));
        }

        Options = options;
        // A base with a path (http://host/airlock) must end in '/' or relative paths would replace its last segment.
        BaseUrl = options.BaseUrl.AbsoluteUri.EndsWith('/') ? options.BaseUrl : new Uri(options.BaseUrl.AbsoluteUri + "/");
        _ownsHttp = options.HttpClient is null;
        // Our own client has no overall timeout: command output streams for as long as the command runs;
        // control calls get Options.Timeout each.
        _http = options.HttpClient ?? new HttpClient { Timeout = System.Threading.Timeout.InfiniteTimeSpan };
    }

    /// <summary>The options this client was made with.</summary>
    public AirlockClientOptions Options { get; }

    internal HttpClient Http => _http;

    internal Uri BaseUrl { get; }

    /// <summary>Creates a sandbox and waits until its agent answers. Dispose the result to kill it.</summary>
    /// <exception cref="AirlockApiException">airlockd refused (bad request, boundary unavailable, quota...).</exception>
    public async Task<Sandbox> CreateSandboxAsync(SandboxCreateOptions? options = null, CancellationToken cancellationToken = default)
    {
        var request = BuildCreateRequest(options ?? new SandboxCreateOptions());
        var created = await SendAsync(HttpMethod.Post, "sandboxes", JsonContent.Create(request, ApiJsonContext.Default.NewSandboxRequest),
            ApiJsonContext.Default.SandboxCreated, cancellationToken).ConfigureAwait(false);
        return new Sandbox(this, created.SandboxId, created.TemplateId, created.EnvdAccessToken, created.Boundary);
    }

    /// <summary>Pauses a microvm sandbox to disk: its processes, memory and files are kept, nothing runs.</summary>
    /// <exception cref="AirlockApiException">409 when already paused or the boundary cannot pause; 507 when the disk is full (it keeps running).</exception>
    public Task PauseAsync(string sandboxId, CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Post, "sandboxes/" + EscapeId(sandboxId) + "/pause", null, cancellationToken);

    /// <summary>
    /// Pauses a sandbox choosing what it keeps: <paramref name="toDisk"/> false keeps memory where the boundary can (a
    /// microVM's memory image, a container frozen in place; a process sandbox keeps its files regardless), true keeps
    /// only its files and frees its memory (a microVM then boots from its disk on resume).
    /// </summary>
    public Task PauseAsync(string sandboxId, bool toDisk, CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Post, "sandboxes/" + EscapeId(sandboxId) + "/pause" + (toDisk ? "?mode=disk" : "?mode=memory"), null, cancellationToken);

    /// <summary>Brings a paused sandbox back (E2B's connect); returns true when it had to be resumed, false when it was running.</summary>
    public async Task<bool> ResumeAsync(string sandboxId, int? timeoutSeconds = null, CancellationToken cancellationToken = default)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(Options.Timeout);
        using var response = await SendCoreAsync(HttpMethod.Post, "sandboxes/" + EscapeId(sandboxId) + "/connect",
            JsonContent.Create(new ResumeRequest { Timeout = timeoutSeconds }, ApiJsonContext.Default.ResumeRequest), timeout.Token, cancellationToken).ConfigureAwait(false);
        return response.StatusCode == System.Net.HttpStatusCode.Created;
    }

    /// <summary>Metered usage of the caller's tenant, in total and per sandbox.</summary>
    public Task<UsageReport> UsageAsync(CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Get, "usage", null, ApiJsonContext.Default.UsageReport, cancellationToken);

    /// <summary>Attaches to a running sandbox. The returned object kills it on dispose unless <see cref="Sandbox.Detach"/> is called.</summary>
    /// <exception cref="AirlockApiException">No such sandbox, or it is not running.</exception>
    public async Task<Sandbox> ConnectAsync(string sandboxId, CancellationToken cancellationToken = default)
    {
        var detail = await GetAsync(sandboxId, cancellationToken).ConfigureAwait(false);
        if (detail.EnvdAccessToken is null)
        {
            throw new AirlockApiException(HttpStatusCode.Conflict, "no_access_token",
                $"Sandbox {sandboxId} is {detail.State}; airlockd gave no access token for it, so it cannot be connected to.");
        }

        return new Sandbox(this, detail.SandboxId, detail.TemplateId, detail.EnvdAccessToken, detail.Boundary);
    }

    /// <summary>Lists sandboxes (GET /v2/sandboxes).</summary>
    public async Task<IReadOnlyList<SandboxDetail>> ListAsync(SandboxListFilter? filter = null, CancellationToken cancellationToken = default)
    {
        return await SendAsync(HttpMethod.Get, BuildListPath(filter), null, ApiJsonContext.Default.ListSandboxDetail, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>One sandbox's details.</summary>
    public Task<SandboxDetail> GetAsync(string sandboxId, CancellationToken cancellationToken = default)
    {
        return SendAsync(HttpMethod.Get, "sandboxes/" + EscapeId(sandboxId), null, ApiJsonContext.Default.SandboxDetail, cancellationToken);
    }

    /// <summary>Kills a sandbox.</summary>
    /// <exception cref="AirlockApiException">No such sandbox (404), or it could not be killed.</exception>
    public Task KillAsync(string sandboxId, CancellationToken cancellationToken = default)
    {
        return SendAsync(HttpMethod.Delete, "sandboxes/" + EscapeId(sandboxId), null, cancellationToken);
    }

    /// <summary>Sets a sandbox's remaining lifetime to <paramref name="seconds"/> from now.</summary>
    public Task SetTimeoutAsync(string sandboxId, int seconds, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(seconds);
        return SendAsync(HttpMethod.Post, "sandboxes/" + EscapeId(sandboxId) + "/timeout",
            JsonContent.Create(new TimeoutRequest { Timeout = seconds }, ApiJsonContext.Default.TimeoutRequest), cancellationToken);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_ownsHttp)
        {
            _http.Dispose();
        }
    }

    internal static NewSandboxRequest BuildCreateRequest(SandboxCreateOptions o)
    {
        if (string.IsNullOrWhiteSpace(o.Template))
        {
            throw new ArgumentException("Template must not be empty.", nameof(o));
        }

        if (o.TimeoutSeconds is <= 0)
        {
            throw new ArgumentException($"TimeoutSeconds must be positive (got {o.TimeoutSeconds}).", nameof(o));
        }

        return new NewSandboxRequest
        {
            TemplateId = o.Template,
            Risk = o.Risk,
            Boundary = o.Boundary,
            AllowDowngrade = o.AllowDowngrade ? true : null,
            Timeout = o.TimeoutSeconds,
            Metadata = o.Metadata is null ? null : new Dictionary<string, string>(o.Metadata),
            EnvVars = o.EnvVars is null ? null : new Dictionary<string, string>(o.EnvVars),
            MemoryMB = o.MemoryMB,
            CpuCount = o.CpuCount,
            DiskMB = o.DiskMB,
            Cold = o.ColdBoot ? true : null,
            AutoPause = o.AutoPause ? true : null,
        };
    }

    internal static string BuildListPath(SandboxListFilter? filter)
    {
        var query = new List<string>();
        if (!string.IsNullOrEmpty(filter?.State))
        {
            query.Add("state=" + Uri.EscapeDataString(filter.State));
        }

        if (filter?.Metadata is { Count: > 0 } metadata)
        {
            // E2B shape: metadata=<url-encoded "k=v&k2=v2">, each key and value itself url-encoded first.
            var pairs = string.Join('&', metadata.Select(kv => Uri.EscapeDataString(kv.Key) + "=" + Uri.EscapeDataString(kv.Value)));
            query.Add("metadata=" + Uri.EscapeDataString(pairs));
        }

        return query.Count == 0 ? "v2/sandboxes" : "v2/sandboxes?" + string.Join('&', query);
    }

    private static string EscapeId(string sandboxId)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(sandboxId);
        return Uri.EscapeDataString(sandboxId.Trim());
    }

    private async Task<T> SendAsync<T>(HttpMethod method, string path, HttpContent? content, JsonTypeInfo<T> type, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(Options.Timeout);
        using var response = await SendCoreAsync(method, path, content, timeout.Token, cancellationToken).ConfigureAwait(false);
        try
        {
            var value = await response.Content.ReadFromJsonAsync(type, timeout.Token).ConfigureAwait(false);
            return value ?? throw new AirlockApiException(response.StatusCode, "bad_response", $"{method} /{path} returned an empty body.");
        }
        catch (JsonException e)
        {
            throw new AirlockApiException(response.StatusCode, "bad_response", $"{method} /{path} returned JSON this client does not understand: {e.Message}", e);
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new AirlockApiException(0, "timeout", $"{method} /{path} did not answer within {Options.Timeout.TotalSeconds:0} s.", e);
        }
    }

    private async Task SendAsync(HttpMethod method, string path, HttpContent? content, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(Options.Timeout);
        using var response = await SendCoreAsync(method, path, content, timeout.Token, cancellationToken).ConfigureAwait(false);
    }

    private async Task<HttpResponseMessage> SendCoreAsync(HttpMethod method, string path, HttpContent? content, CancellationToken token, CancellationToken callerToken)
    {
        using var request = new HttpRequestMessage(method, new Uri(BaseUrl, path)) { Content = content };
        if (Options.ApiKey is { Length: > 0 } key)
        {
            request.Headers.TryAddWithoutValidation("X-API-Key", key);
        }

        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, token).ConfigureAwait(false);
        }
        catch (OperationCanceledException e) when (!callerToken.IsCancellationRequested)
        {
            throw new AirlockApiException(0, "timeout", $"{method} {request.RequestUri} did not answer within {Options.Timeout.TotalSeconds:0} s.", e);
        }
        catch (HttpRequestException e)
        {
            throw new AirlockApiException(0, "unreachable", $"cannot reach airlockd at {BaseUrl}: {e.Message}", e);
        }

        if (response.IsSuccessStatusCode)
        {
            return response;
        }

        using (response)
        {
            throw await ReadErrorAsync(response, $"{method} /{path}", token).ConfigureAwait(false);
        }
    }

    internal static async Task<AirlockApiException> ReadErrorAsync(HttpResponseMessage response, string what, CancellationToken cancellationToken)
    {
        string body;
        try
        {
            body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            body = "";
        }

        if (body.Length > 0)
        {
            try
            {
                var error = JsonSerializer.Deserialize(body, ApiJsonContext.Default.ApiError);
                if (error is not null && !string.IsNullOrEmpty(error.Message))
                {
                    return new AirlockApiException(response.StatusCode, error.ErrorCode ?? HttpCode(response.StatusCode), error.Message);
                }
            }
            catch (JsonException)
            {
                // Not airlockd's error shape; fall through to the raw text.
            }
        }

        var text = body.Length == 0 ? response.ReasonPhrase ?? "no body" : Truncate(body.Trim(), 500);
        return new AirlockApiException(response.StatusCode, HttpCode(response.StatusCode),
            $"{what} failed with HTTP {(int)response.StatusCode}: {text}");
    }

    private static string HttpCode(HttpStatusCode status) => "http_" + ((int)status).ToString(CultureInfo.InvariantCulture);

    private static string Truncate(string text, int max) => text.Length <= max ? text : new StringBuilder(text, 0, max, max + 3).Append("...").ToString();
}
