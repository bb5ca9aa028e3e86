-- One database per service; each service also creates its own if it is missing.
CREATE DATABASE products;
CREATE DATABASE orders;
