using System.Security.Cryptography;
using System.Text;
using Airlock.Envd;

namespace Airlock.Guest;

/// <summary>
/// Authorization of <c>GET/POST /files</c>: the access token in <c>X-Access-Token</c>, or, without the header, a URL
/// signed with it, as E2B's SDKs make for <c>uploadUrl</c>/<c>downloadUrl</c> of a secured sandbox:
/// <code>
/// signature = "v1_" + base64(sha256("{path}:{operation}:{username}:{token}[:{signature_expiration}]")), '=' padding removed
/// </code>
/// where path and username are the query's values ("" when absent), operation is <c>read</c> (GET) or <c>write</c>
/// (POST), and signature_expiration, when present, is in unix seconds. Failures answer 401 with envd's messages.
/// </summary>
internal static class SignedFileUrls
{
    /// <summary>Set on a request that a signature (not the token) authorized; it then acts only as the signed user.</summary>
    public const string SignedItem = "airlock.signed-url";

    public static bool IsFileRoute(HttpRequest request) =>
        request.Path == "/files" && (HttpMethods.IsGet(request.Method) || HttpMethods.IsPost(request.Method));

    /// <summary>Answers null when the request may proceed, else the status and message to refuse it with.</summary>
    public static (int Status, string Message)? Check(HttpContext context, AgentState state, TimeProvider time)
    {
        var request = context.Request;
        var header = request.Headers[EnvdProtocol.AccessTokenHeader].ToString();
        if (header.Length > 0)
        {
            return state.Accepts(header) ? null : (StatusCodes.Status401Unauthorized, "access token present in header but does not match");
        }

        var query = request.Query;
        if (!query.TryGetValue("signature", out var signature) || signature.Count != 1)
        {
            return (StatusCodes.Status401Unauthorized, "missing signature query parameter");
        }

        long? expiration = null;
        if (query.TryGetValue("signature_expiration", out var value))
        {
            if (!long.TryParse(value.ToString(), System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var seconds))
            {
                return (StatusCodes.Status400BadRequest, "signature_expiration must be unix seconds");
            }

            expiration = seconds;
        }

        var operation = HttpMethods.IsGet(request.Method) ? "read" : "write";
        var expected = state.Sign(query["path"].ToString(), operation, query["username"].ToString(), expiration);
        if (!CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(expected), Encoding.UTF8.GetBytes(signature.ToString())))
        {
            return (StatusCodes.Status401Unauthorized, "invalid signature");
        }

        if (expiration < time.GetUtcNow().ToUnixTimeSeconds())
        {
            return (StatusCodes.Status401Unauthorized, "signature is already expired");
        }

        context.Items[SignedItem] = true;
        return null;
    }

    /// <summary>The signature for one operation (the token never leaves <see cref="AgentState"/>).</summary>
    public static string Sign(ReadOnlySpan<byte> token, string path, string operation, string user, long? expiration) =>
        EnvdSignatures.Sign(token, path, operation, user, expiration);
}
