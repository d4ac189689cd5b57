namespace Airlock.Templates;

/// <summary>A template a sandbox can start from.</summary>
public sealed record TemplateInfo(string TemplateId, string Description, IReadOnlyList<string> Aliases);

/// <summary>The templates this node knows. Only the Debian <c>base</c> template exists until template builds land.</summary>
public sealed class TemplateCatalog
{
    public const string BaseTemplateId = "base";

    private readonly Dictionary<string, TemplateInfo> _byName = new(StringComparer.Ordinal);

    public TemplateCatalog()
    {
        var baseTemplate = new TemplateInfo(BaseTemplateId, "Debian bookworm (minbase) with bash, coreutils, procps, python3, ca-certificates; user 'user' (uid 1000)", []);
        _byName[baseTemplate.TemplateId] = baseTemplate;
    }

    /// <summary>Template ids in a stable order, for error messages and listings.</summary>
    public IReadOnlyList<string> Known => [.. _byName.Keys.Order(StringComparer.Ordinal)];

    public bool TryResolve(string? templateId, out TemplateInfo template)
    {
        if (templateId is not null && _byName.TryGetValue(templateId, out var found))
        {
            template = found;
            return true;
        }

        template = null!;
        return false;
    }
}
