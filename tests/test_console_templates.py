"""
The console's templates: autoescaping on for every value, and the
display filters for times and sizes.
"""

from __future__ import annotations

from popproxy.console._templates import Templates, size, when


def test_everyValueIsEscaped() -> None:
    """
    Markup in a value reaches the page as text, in text and attributes.
    """
    page = (
        Templates()
        .render(
            "signin.html",
            title="<b>t</b>",
            csrf='"><script>x</script>',
            login="<img src=x onerror=alert(1)>",
            error="&",
            session=None,
        )
        .decode()
    )
    assert "<b>t</b>" not in page and "&lt;b&gt;t&lt;/b&gt;" in page
    assert 'value="&#34;&gt;&lt;script&gt;x&lt;/script&gt;"' in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&amp;" in page


def test_filters() -> None:
    """
    Times show in UTC to the minute; sizes in bytes, KiB or MiB.
    """
    assert when(0) == "1970-01-01 00:00 UTC"
    assert (size(10), size(2048), size(3 * 1024 * 1024)) == ("10 bytes", "2.0 KiB", "3.0 MiB")
