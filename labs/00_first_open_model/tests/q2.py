OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert reply is not ..., 'not done yet: set reply'\n"
                                               '>>> assert isinstance(reply, str) and reply.strip(), "reply should be the model\'s non-empty text"\n',
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
