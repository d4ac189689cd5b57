namespace Airlock.Sdk;

/// <summary>How an <see cref="AirlockClient"/> reaches airlockd.</summary>
public sealed record AirlockClientOptions
{
    /// <summary>The address airlockd listens on when nothing else is configured.</summary>
    public static readonly Uri DefaultBaseUrl = new("http://127.0.0.1:8686");

    /// <summary>The data directory airlockd uses when nothing else is configured.</summary>
    public const string DefaultDataDir = "/var/lib/airlock";

    /// <summary>airlockd's base URL; the control API and the envd routes share it.</summary>
    public Uri BaseUrl { get; init; } = DefaultBaseUrl;

    /// <summary>API key sent as <c>X-API-Key</c> (keys look like <c>e2b_&lt;hex&gt;</c>).</summary>
    public string? ApiKey { get; init; }

    /// <summary>
    /// An HttpClient to use instead of the client's own. The client never disposes it and never changes its
    /// default headers; its <see cref="HttpClient.Timeout"/> should be infinite or long, since command output streams.
    /// </summary>
    public HttpClient? HttpClient { get; init; }

    /// <summary>Time limit for each control-API call (create, list, kill...). Command streams are not limited by it.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>
    /// Options from the environment, the way the CLI resolves them. Explicit arguments win; then <c>AIRLOCK_URL</c>;
    /// the key comes from <c>AIRLOCK_API_KEY</c>, then <c>E2B_API_KEY</c>, then <c>&lt;data dir&gt;/bootstrap-key</c>
    /// (data dir from <c>AIRLOCK_DATA_DIR</c>, default <c>/var/lib/airlock</c>) when it is readable.
    /// </summary>
    /// <exception cref="ArgumentException">The URL is not an absolute http(s) URL.</exception>
    public static AirlockClientOptions FromEnvironment(string? url = null, string? apiKey = null, string? dataDir = null) =>
        FromEnvironment(url, apiKey, dataDir, Environment.GetEnvironmentVariable);

    /// <summary>As <see cref="FromEnvironment(string?, string?, string?)"/>, reading variables through <paramref name="environment"/>.</summary>
    public static AirlockClientOptions FromEnvironment(string? url, string? apiKey, string? dataDir, Func<string, string?> environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var baseUrl = ParseBaseUrl(NonEmpty(url) ?? NonEmpty(environment("AIRLOCK_URL")));
        var key = NonEmpty(apiKey)
            ?? NonEmpty(environment("AIRLOCK_API_KEY"))
            ?? NonEmpty(environment("E2B_API_KEY"))
            ?? ReadBootstrapKey(NonEmpty(dataDir) ?? NonEmpty(environment("AIRLOCK_DATA_DIR")) ?? DefaultDataDir);
        return new AirlockClientOptions { BaseUrl = baseUrl, ApiKey = key };
    }

    /// <summary>Parses an airlockd base URL; null or empty gives <see cref="DefaultBaseUrl"/>.</summary>
    /// <exception cref="ArgumentException">The URL is not an absolute http(s) URL.</exception>
    public static Uri ParseBaseUrl(string? url)
    {
        if (string.IsNullOrWhiteSpace(url))
        {
            return DefaultBaseUrl;
        }

        if (!Uri.TryCreate(url.Trim(), UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException($"'{url}' is not an http(s) URL (expected something like http://127.0.0.1:8686).", nameof(url));
        }

        return uri;
    }

    private static string? ReadBootstrapKey(string dataDir)
    {
        try
        {
            var path = Path.Combine(dataDir, "bootstrap-key");
            return File.Exists(path) ? NonEmpty(File.ReadAllText(path)) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string? NonEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value.Trim();
}
