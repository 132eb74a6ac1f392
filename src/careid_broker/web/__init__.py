"""The broker's web layer: views, sign-in cookies, CSRF, security headers, error pages.

Views stay thin: they read the request, call a service (`careid_broker.signin`, the
store's repositories, the directory) and render the outcome.
"""
