"""The live dashboard's static files (index.html, *.js, *.css), served at /dashboard."""
