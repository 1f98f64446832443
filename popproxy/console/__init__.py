"""
The web console, served by the proxy itself: users sign in with their mail
login and get back what the filters quarantined from their mail (see
docs/console.md).

One job per module: L{_links} (addresses of items), L{_sessions} (the
server-side sign-in sessions), L{_csrf} (tokens for every form),
L{_signin} (a password checked by a POP3 login upstream), L{_access}
(who may see and download what), L{_view} (the quarantine as the console
reads it, indexed by user), L{_templates} (the HTML, escaped), L{_pages}
(the twisted.web resources), L{_current} (the settings in force, which
a reload replaces), L{_service} (the listener in the service tree, and
what a reload changes in it).
"""
